"""Which version answers a request: sticky, hash-based champion/challenger routing.

A customer's bucket (0-9,999) is a hash of the model family and the customer id, so one
customer sees one version for the whole canary, and raising the share only moves customers
from the champion to the challenger, never back. A pin (the X-Model-Version header) wins.
"""

from __future__ import annotations

import hashlib

from core.registry import CHALLENGER, CHAMPION

BUCKETS = 10_000


class UnknownVersion(ValueError):
    """A pin names a version or role that is not being served."""


def bucket(family: str, customer_id: str) -> int:
    digest = hashlib.blake2b(f"{family}:{customer_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def choose_role(family: str, customer_id: str, share_percent: float, has_challenger: bool) -> str:
    """The challenger gets the customers whose bucket falls below its share of the buckets."""
    if not has_challenger or share_percent <= 0:
        return CHAMPION
    return CHALLENGER if bucket(family, customer_id) < share_percent * BUCKETS / 100 else CHAMPION


def resolve_pin(pin: str, versions: dict[str, str]) -> str:
    """The role a pin asks for; `versions` maps each live role to its registry version.

    A pin is a role name ("champion", "challenger") or a registry version ("7")."""
    pin = pin.strip().lower()
    if pin in versions:
        return pin
    for role, version in versions.items():
        if pin.removeprefix("v") == version:
            return role
    served = ", ".join(f"{role}={version}" for role, version in versions.items())
    raise UnknownVersion(f"version {pin!r} is not served (serving {served})")
