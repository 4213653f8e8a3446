"""Where drift reports land and how their summaries are read: monitoring writes them
(`python -m monitoring drift-report`), the service exports the newest one's drift share.

    DATA_DIR/reports/drift/<family>-<UTC time>/summary.json
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def latest_summary(reports_dir: Path, family: str) -> dict | None:
    """The summary of the newest drift report of a family (folders are named <family>-<UTC time>)."""
    folders = sorted(reports_dir.glob(f"{family}-*/summary.json"))
    if not folders:
        return None
    try:
        return json.loads(folders[-1].read_text())
    except (OSError, ValueError) as e:
        log.warning("cannot read %s: %s", folders[-1], e)
        return None
