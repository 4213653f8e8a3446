"""The BentoML service: the public HTTP API, with every family it serves scored in the process
that answers the request.

    bentoml serve bentos.service:FintechAPI          # port 3000, every family
    SERVING_FAMILIES=fraud bentoml serve ...        # only fraud-detection (the others: 404)
    SERVING_GRPC_PORT=0 bentoml serve ...           # no gRPC (default: the Open Inference Protocol on 8001)
    AUTH_MODE=off bentoml serve ...                 # open to anyone (default: callers need a key or a token)

The models are the versions `make import-models` packed into the bento; each worker loads them,
opens the feature store and starts its families (bentos/family.py). Routes: bentos/api.py.
"""

from __future__ import annotations

import bentoml
from pydantic import ValidationError

from bentos.admission import Admission
from bentos.api import create_app
from bentos.auth import Authenticate, AuthSettings, check_mode
from bentos.config import freeze_heap, get_serving_settings, service_options
from bentos.family import Server
from bentos.fastpath import FastPath
from core.families import FAMILIES
from core.settings import get_settings
from scoring.loading import from_bento

SERVING = get_serving_settings()  # BentoML reads its options when the class is declared
try:
    AUTH = AuthSettings()
    check_mode(AUTH)
except (RuntimeError, ValidationError) as e:  # a setting to fix, not a bug: the reason alone, without a traceback
    raise SystemExit(f"error: {e}") from None
server = Server(SERVING)
app = create_app(server, AUTH.mode)


def packing_every_family(cls: type) -> type:
    """A `<family>_model` class attribute per family (the BentoML store's `<family>:latest`): BentoML
    learns from a service's class attributes which models its bento packs."""
    for name in FAMILIES:
        setattr(cls, f"{name}_model", bentoml.models.BentoModel(f"{name}:latest"))
    return cls


@bentoml.asgi_app(app, path="/")
@bentoml.service(**service_options(SERVING))
@packing_every_family
class FintechAPI:
    def __init__(self) -> None:
        packed = {name: from_bento(getattr(self, f"{name}_model"), name) for name in SERVING.served()}
        server.start(get_settings(), packed)
        self.grpc = None
        freeze_heap()

    @bentoml.on_startup
    async def serve_grpc(self) -> None:
        """The Open Inference Protocol over gRPC, on this worker's event loop (bentos/oip_grpc.py)."""
        if SERVING.grpc_port:
            from bentos.oip_grpc import start_grpc

            self.grpc = await start_grpc(server, AUTH, SERVING.grpc_host, SERVING.grpc_port, SERVING.max_in_progress)

    @bentoml.on_shutdown
    async def stop(self) -> None:
        """Answer the gRPC calls in flight, and write the inference logs' last rows, before the process exits."""
        if self.grpc is not None:
            await self.grpc.stop(grace=5)
        server.stop()


# in front of BentoML's routing: what is shed costs next to nothing (bentos/admission.py); then who calls
# (bentos/auth.py); then the single-customer scoring routes, answered there (bentos/fastpath.py)
FintechAPI.add_asgi_middleware(Admission, limit=SERVING.max_in_progress, max_header_bytes=SERVING.max_header_bytes)
if AUTH.mode == "on":
    FintechAPI.add_asgi_middleware(Authenticate, settings=AUTH)
FintechAPI.add_asgi_middleware(FastPath, server=server)
