"""What every model service answers besides scoring: which version it serves, and whether it is ready."""

from __future__ import annotations

import bentoml

from bentos.scoring import ModelInfo


class ModelService:
    """Mixed into the churn, fraud and segment services, which set `info` and `scorer` in __init__."""

    info: ModelInfo

    @bentoml.api
    def status(self) -> dict:
        return self.info.as_dict()

    @bentoml.api
    def ready(self) -> bool:
        """The feature store answers (the model itself was loaded in __init__)."""
        return self.scorer.reader.ping()
