"""Decision flips: on the rows a challenger scored during its canary (its share of the customers,
or every request in shadow), how often the champion, given the same features, decides otherwise,
and how often the two give an adverse decision different principal reasons.

Both versions score the logged rows again, offline, through the service's own scorers: a logged
row replays exactly (`python -m monitoring replay`), so the challenger's side is what it answered
and the champion's is what it would have answered on the same customer or transaction, at the
same moment. The rows are the challenger's because they carry its features, and a challenger
reads the champion's features or more (fraud_v2 adds the stream's to fraud_v1's).

    flips = decision_flips(settings, "churn", champion="1", challenger="2")
    flips["flip_rate"], flips["changes"]       # 0.021, {"medium -> high": 21, "high -> medium": 9, ...}
"""

from __future__ import annotations

from collections import Counter

import pandas as pd

from core.families import FAMILIES
from core.settings import Settings
from scoring.frames import results_of

ROLES = ("challenger", "shadow")  # the roles a challenger's rows are logged under


def decisions(loaded, frame: pd.DataFrame) -> tuple[list[str], list[tuple[str, ...]]]:
    """Each row's decision (as text) and its principal reasons' codes (none for a family without reasons)."""
    field = FAMILIES[loaded.family].decision_field
    out, codes = [], []
    for result in results_of(loaded, frame, reasons=bool(FAMILIES[loaded.family].adverse)):
        out.append(str(result[field]))
        codes.append(tuple(r["code"] or r["feature"] for r in result.get("principal_reasons", [])))
    return out, codes


def compare(family: str, champion: tuple[list[str], list], challenger: tuple[list[str], list]) -> dict:
    """The flips between two versions' decisions and principal reasons on the same rows."""
    (ours, our_codes), (theirs, their_codes) = champion, challenger
    adverse = {str(d) for d in FAMILIES[family].adverse}
    changes = Counter(f"{a} -> {b}" for a, b in zip(ours, theirs) if a != b)
    both = [(a, b) for d, e, a, b in zip(ours, theirs, our_codes, their_codes) if d in adverse and e in adverse]
    changed = sum(a != b for a, b in both)
    return {"compared": len(ours), "decision_flips": sum(changes.values()),
            "flip_rate": round(sum(changes.values()) / len(ours), 4) if ours else None,
            "changes": dict(changes.most_common()),
            "adverse_under_both": len(both), "principal_reasons_changed": changed,
            "principal_change_rate": round(changed / len(both), 4) if both else None}


def decision_flips(settings: Settings, family: str, champion: str, challenger: str, log_dir=None) -> dict:
    """The flips on every row the challenger scored (see the module); `skipped` says why there
    are none to count."""
    from core.decision_log import NoLog, read_window
    from scoring.loading import from_registry

    base = {"family": family, "champion": champion, "challenger": challenger}
    try:
        rows = read_window((log_dir or settings.data_dir / "inference_log") / family, version=challenger, roles=ROLES)
    except NoLog as e:
        return {**base, "compared": 0, "skipped": str(e)}
    if rows.empty:
        return {**base, "compared": 0, "skipped": f"the inference log holds no row of version {challenger} yet"}
    cache = settings.data_dir / "model_cache"
    versions = [from_registry(family, v, settings.tracking_uri, cache) for v in (champion, challenger)]
    if missing := [f for f in versions[0].metadata["features"] if f not in rows.columns]:
        return {**base, "compared": 0, "skipped": f"the champion reads {len(missing)} feature(s) the challenger's rows "
                                                  f"do not carry: {', '.join(missing[:5])}"}
    return {**base, **compare(family, decisions(versions[0], rows), decisions(versions[1], rows))}
