"""Whether the inference log is what its writers wrote (`check_chain`), and whether its decisions
come out the same when scored again (`replay`). The format and the chain: core/decision_log.py.

    python -m monitoring verify --model churn
    python -m monitoring replay --model churn --since 2026-12-01
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.decision_log import GENESIS, LogFile, canonical, content, link, log_files, pruned_heads
from core.decisions import severest
from core.rules import logged_outcomes


@dataclass
class Finding:
    kind: str  # edited, removed, reordered, inserted, file missing, unchained
    where: str  # the file, and the row's seq and request id
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.where}: {self.detail}"


@dataclass
class ChainReport:
    family: str
    writers: int = 0
    rows: int = 0
    heads: dict[str, tuple[int, str]] = field(default_factory=dict)  # writer -> its last seq and chain
    findings: list[Finding] = field(default_factory=list)


@dataclass
class _Row:
    seq: int
    chain: str
    content: bytes
    file: Path
    request_id: str

    def where(self) -> str:
        return f"{self.file.parent.name}/{self.file.name} seq {self.seq} request {self.request_id}"


def check_chain(directory: Path, family: str) -> ChainReport:
    """Every row of every writer of one family's log checked against its chain: a row whose content
    does not give its chain (edited), numbers missing (removed: rows, or a whole file), rows out of
    their order (reordered), a row the chain does not lead to (inserted)."""
    report = ChainReport(family)
    files = log_files(directory)
    pruned = pruned_heads(directory)
    for unchained in (f for f in files if f.writer is None):
        report.findings.append(Finding("unchained", unchained.path.name, "written before the log was chained; not checked"))
    writers: dict[str, list[LogFile]] = {}
    for f in files:
        if f.writer is not None:
            writers.setdefault(f.writer, []).append(f)
    for writer, own in writers.items():
        report.writers += 1
        report.findings += _check_writer(writer, own, family, pruned.get(writer), report)
    return report


def _check_writer(writer: str, files: list[LogFile], family: str, pruned: tuple[int, str] | None,
                  report: ChainReport) -> list[Finding]:
    findings = []
    numbers = {f.number for f in files}
    for missing in sorted(set(range(min(numbers), max(numbers) + 1)) - numbers):
        findings.append(Finding("file missing", f"writer {writer} file {missing:06d}", "the writer wrote it; it is gone"))
    rows = [row for f in files for row in _rows(f, family)]
    report.rows += len(rows)
    if not rows:
        return findings
    # where the chain starts: its first row, or the row after the last one prune-log removed
    first_seq, previous = (pruned[0] + 1, pruned[1]) if pruned is not None else (1, GENESIS)
    by_seq: dict[int, list[_Row]] = {}
    highest = 0
    for row in rows:  # as stored: files by number, rows in file order
        if row.seq < highest:
            findings.append(Finding("reordered", row.where(), f"stored after seq {highest}"))
        highest = max(highest, row.seq)
        by_seq.setdefault(row.seq, []).append(row)
    if (lowest := min(by_seq)) < first_seq:
        findings.append(Finding("inserted", by_seq[lowest][0].where(), f"numbered before the chain's first row, {first_seq}"))
    missing_from = None
    for seq in range(first_seq, highest + 1):
        candidates = by_seq.get(seq, [])
        if not candidates:
            missing_from = seq if missing_from is None else missing_from
            previous = None  # the next row's link cannot be checked
            continue
        if missing_from is not None:
            gap = f"seq {missing_from}" + (f" to {seq - 1}" if seq - 1 > missing_from else "")
            findings.append(Finding("removed", candidates[0].where(), f"{gap} missing before it"))
            missing_from = None
        follows = [row for row in candidates if previous is None or link(previous, row.content) == row.chain]
        for row in candidates:
            if row in follows:
                continue
            if follows:
                findings.append(Finding("inserted", row.where(), f"the chain runs through another row numbered {seq}"))
            elif any(link(row.chain, after.content) == after.chain for after in by_seq.get(seq + 1, [])):
                findings.append(Finding("edited", row.where(), "its content does not give its chain"))
            else:
                findings.append(Finding("edited", row.where(), "neither its content nor its chain follow the row before"))
        previous = (follows or candidates)[0].chain
    report.heads[writer] = (highest, by_seq[highest][0].chain)
    return findings


def _rows(f: LogFile, family: str) -> list[_Row]:
    """The file's rows in stored order, each with the content its chain should cover."""
    import pyarrow.parquet as pq

    table = pq.read_table(f.path).to_pandas()
    columns = {name: table[name].tolist() for name in
               ("seq", "chain", "request_id", "client_id", "customer_id", "version", "role", "score", "decision", "overridden")}
    rules = table["rules"].fillna("").tolist() if "rules" in table.columns else [""] * len(table)
    times = (table["time"].astype("int64") // 1000 * 1000).tolist()
    built: dict[int, bytes] = {}
    for version, features in f.features.items():
        mine = np.flatnonzero((table["version"] == version).to_numpy())
        values = canonical(table.reindex(columns=features).iloc[mine].to_numpy(dtype=float))
        named = ",".join(features)
        for i, at in enumerate(mine):
            built[at] = content(family, columns["seq"][at], times[at], columns["request_id"][at], columns["client_id"][at],
                                columns["customer_id"][at], version, columns["role"][at], columns["score"][at],
                                columns["decision"][at], bool(columns["overridden"][at]), named, values[i], rules[at])
    # a row of a version the footer does not name has no content to check: it cannot follow the chain
    return [_Row(columns["seq"][at], columns["chain"][at], built.get(at, b""), f.path, columns["request_id"][at])
            for at in range(len(table))]


@dataclass
class ReplayReport:
    family: str
    rows: int = 0
    reproduced: int = 0
    by_version: dict[str, tuple[int, int]] = field(default_factory=dict)  # version -> rows, reproduced
    differences: list[dict] = field(default_factory=list)  # the first rows that did not reproduce


def replay(window, family: str, load, keep: int = 20) -> ReplayReport:
    """Score each logged row again with its logged version and its logged features (`load(version)`
    gives the version, scoring/loading.py) and count those whose score and decision are the logged
    ones exactly. Shadow rows are replayed too: their version scored them. A fraud row's logged
    rule hits raise the replayed outcome as they raised the served one (the transaction's own
    fields, which some rules read, are not logged; the hits are, under the chain)."""
    from scoring.frames import scored_frame

    report = ReplayReport(family)
    for version, rows in window.groupby("version", sort=True):
        loaded = load(str(version))
        scores, decisions = scored_frame(loaded, rows)
        if "rules" in rows.columns:
            decisions = [severest([d, *logged_outcomes(hits)]) if hits else d
                         for d, hits in zip(decisions, rows["rules"].fillna("").tolist())]
        same = (scores == rows["score"].to_numpy(dtype=float)) & (np.array(decisions) == rows["decision"].to_numpy(dtype=str))
        report.rows += len(rows)
        report.reproduced += int(same.sum())
        report.by_version[str(version)] = (len(rows), int(same.sum()))
        for at in np.flatnonzero(~same)[:max(0, keep - len(report.differences))]:
            logged = rows.iloc[at]
            report.differences.append({"request_id": logged["request_id"], "version": str(version), "logged_score": float(logged["score"]),
                                       "replayed_score": float(scores[at]), "logged_decision": logged["decision"],
                                       "replayed_decision": decisions[at]})
    return report
