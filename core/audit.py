"""The audit trail of admin actions (who changed what serves, and when) and of explain calls (who
read which customer's feature values, and when: a file of its own).

    append(settings.audit_log, action="promote", actor="platform-ops", family="churn", details={...})

One JSON object per line: `at` (UTC), `action` (reload, canary, promote, rollback, retrain), `actor` (the
client id the service authenticated), `verified` (false when the service could not vouch for the
actor: the rollout CLI acting while the service is down names the local user), `family`, `details`
and `source` (the service or the rollout CLI). The file is only ever opened for appending, and each
record is one write() to it, so the service's workers and the CLI can add to it at once without
interleaving. Nothing in the platform rewrites or truncates it: ship it to your log store from there.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

ACTIONS = ("reload", "canary", "promote", "rollback", "retrain", "explain")  # explain: its own file, Settings.explain_log


def append(path: Path, *, action: str, actor: str, verified: bool, source: str, family: str | None = None,
           details: dict | None = None, via: str = "none") -> dict:
    """Add one record to the audit log at `path`; the record. `via`: how the actor authenticated
    (token, api_key, or none), which with `actor` names one client."""
    if action not in ACTIONS:
        raise ValueError(f"unknown admin action {action!r}; one of {', '.join(ACTIONS)}")
    record = {"at": datetime.now(UTC).isoformat(timespec="milliseconds"), "action": action, "actor": actor, "via": via,
              "verified": verified, "family": family, "details": details or {}, "source": source}
    line = (json.dumps(record, default=str, separators=(",", ":")) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return record


def read(path: Path) -> list[dict]:
    """Every record, oldest first (none when the log does not exist yet)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
