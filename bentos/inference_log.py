"""The inference log: every prediction, with the features it used, in Parquet files chained by
hash, each batch in a journal before its answers leave (core/decision_log.py has the format).

    DATA_DIR/inference_log/<family>/date=YYYY-MM-DD/part-<HHMMSS>-<writer>-<n>.parquet

Columns: request_id, client_id (who sent the request: bentos/auth.py; empty with AUTH_MODE=off),
scope (the scope it was scored under: `inference`, or empty), time (UTC), customer_id, model,
version, role (champion, challenger, shadow), score, decision, overridden (the caller set some of
the features: drift reports and retraining leave such rows out), rules (fraud: the rules that hit,
`name:outcome`, comma-separated), seq and chain (the row's place in its writer's hash chain), then
one column per feature the version read. It is personal data: files
are 0640 and folders 0750 (the service's group reads them: the jobs run in it), and
`python -m monitoring prune-log` removes the days past the retention.

A model service appends each scored batch as it is scored, before the answers leave: the batch is
numbered, written to the writer's journal (`journal`: `write` hands it to the operating system,
which keeps it if the process is killed; `fsync` also waits for the disk, which keeps it if the
machine fails) and held in memory. A background thread (`start()`) chains the rows gathered (a
row's chain follows from its content and the row before it, so it is computed off the request
path), writes them as one Parquet file every `flush_s` seconds or `flush_rows` rows, and then
removes the journal segments it covered. `off` is the log as it was before the journal: rows held
in memory only, so a kill loses what was not yet written, and not numbered or chained either
(recovery tells the rows a file already holds by their numbers); `close()`, called when the service stops, writes the rest. A journal
left by a process that died is written as Parquet by the next log of its family to start
(`recover`), or by `python -m monitoring recover-log`. Rows that could not be scored (unknown
customer, invalid feature) are not predictions and are not logged; the metrics count them.

When the folder cannot be written (full, read-only, gone), serving goes on and the rows wait in
memory, to be written as soon as it can be again; at most `max_rows` of them: past that the oldest
are dropped and counted (`dropped_rows`, and `on_dropped` for the metric). A write that fails leaves
no partial file behind.

    pd.read_parquet("data/inference_log/churn")          # the whole log of a family, with `date`
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from core.decision_log import GENESIS, Batch, journal_record, open_segment, recover, segment_path, write_file
from core.families import FAMILIES
from core.rules import as_logged
from scoring.base import FEATURES_KEY

log = logging.getLogger(__name__)
JOURNAL_MODES = ("off", "write", "fsync")


class InferenceLog:
    def __init__(self, root: Path, family: str, flush_rows: int = 5_000, flush_s: float = 2.0,
                 on_backlog: Callable[[int], None] | None = None, max_rows: int = 100_000,
                 on_dropped: Callable[[int], None] | None = None, journal: str = "write"):
        if journal not in JOURNAL_MODES:
            raise ValueError(f"journal must be one of {', '.join(JOURNAL_MODES)}, got {journal!r}")
        self.directory, self.family, self.on_backlog, self.on_dropped = root / family, family, on_backlog, on_dropped
        self.flush_rows, self.flush_s, self.max_rows, self.journal = flush_rows, flush_s, max_rows, journal
        # host, pid and a token: pods share a volume, and a restarted container's process often has the same pid
        self.writer = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.dropped_rows = 0
        self.write_error: str | None = None  # why the last write failed, until one succeeds
        self._pending: list[Batch] = []
        self._pending_rows = 0
        self._seq, self._head = 0, GENESIS  # the writer's last row number, and the last chain it wrote
        self._segment = 0  # the journal segment being appended to (its descriptor: _journal_fd)
        self._journal_fd: int | None = None
        self._covered: list[tuple[Path, int]] = []  # closed segments whose rows are not in a file yet, still locked
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._files = 0
        self.written_rows = 0
        self._thread = threading.Thread(target=self._run, name=f"{family}-inference-log", daemon=True)

    def start(self) -> InferenceLog:
        """Start the writer thread (building the log starts nothing); it first writes the journals
        dead writers of this family left."""
        self._thread.start()
        return self

    @property
    def backlog(self) -> int:
        """Rows appended and not yet on disk."""
        return self._pending_rows

    def append(self, version: str, role: str, features: list[str], requests: list[dict], results: list[dict]) -> None:
        """Take the scored rows of one batch, before their answers leave; strips the feature vectors
        from the results."""
        rows = [(request, result) for request, result in zip(requests, results) if FEATURES_KEY in result]
        if not rows:
            return
        score_key, decision_key = FAMILIES[self.family].score_field, FAMILIES[self.family].decision_field
        batch = Batch(
            datetime.now(UTC), version, role, tuple(features),
            [request.get("request_id") or "" for request, _ in rows], [request.get("client_id") or "" for request, _ in rows],
            [bool(request.get("features")) for request, _ in rows],
            [result["customer_id"] for _, result in rows],
            [float(result[score_key]) for _, result in rows], [str(result[decision_key]) for _, result in rows],
            np.vstack([result.pop(FEATURES_KEY) for _, result in rows]),
            rules=[as_logged(result["rules"]) for _, result in rows] if "rules" in rows[0][1] else None,
        )
        with self._lock:  # one order for the numbers, the journal and the files
            if self.journal != "off":
                batch.first_seq, self._seq = self._seq + 1, self._seq + len(batch)
                self._journaled(batch)
            self._pending.append(batch)
            self._pending_rows += len(batch)
            dropped = self._keep_within_bound()
        self._count_dropped(dropped)
        if self._pending_rows >= self.flush_rows:
            self._wake.set()

    def _journaled(self, batch: Batch) -> None:
        """Append the batch to the journal (with the lock held). A journal that cannot be written
        leaves the batch in memory only, as with `journal=off`, and says why in write_error."""
        try:
            if self._journal_fd is None:
                self._segment += 1
                self._journal_fd = open_segment(segment_path(self.directory, self.writer, self._segment))
            os.write(self._journal_fd, journal_record(batch))
            if self.journal == "fsync":
                os.fsync(self._journal_fd)
        except OSError as e:
            if self.write_error is None:
                log.error("%s: cannot write the inference log's journal in %s: %s; the rows are held in memory only",
                          self.family, self.directory, e)
            self.write_error = f"journal: {type(e).__name__}: {e}"

    def _keep_within_bound(self) -> int:
        """Drop the oldest waiting batches past max_rows (the newest always stays); with the lock held."""
        dropped = 0
        while self._pending_rows > self.max_rows and len(self._pending) > 1:
            rows = len(self._pending.pop(0))
            self._pending_rows -= rows
            dropped += rows
        return dropped

    def _count_dropped(self, rows: int) -> None:
        if rows:
            self.dropped_rows += rows
            if self.on_dropped is not None:
                self.on_dropped(rows)

    def _run(self) -> None:
        try:
            for path, rows in recover(self.directory, self.family, durable=self.journal == "fsync"):
                log.info("%s: wrote %d rows a stopped process left in its journal to %s", self.family, rows, path)
        except Exception:
            log.exception("%s: cannot write the journals stopped processes left in %s", self.family, self.directory)
        while not self._closed:
            self._wake.wait(self.flush_s)
            self._wake.clear()
            try:
                written = self.flush()
            except Exception as e:  # a full disk must not stop the thread; the rows stay pending
                if self.write_error is None:
                    log.exception("%s: cannot write the inference log to %s; holding up to %d rows in memory",
                                  self.family, self.directory, self.max_rows)
                self.write_error = f"{type(e).__name__}: {e}"
            else:
                if self.write_error is not None:
                    log.info("%s: the inference log is written again (%d rows now; %d dropped while it could not be)",
                             self.family, written, self.dropped_rows)
                self.write_error = None
            if self.on_backlog is not None:
                self.on_backlog(self.backlog)

    def flush(self) -> int:
        """Write every pending row as one file, then remove the journal segments that held them;
        returns how many rows."""
        with self._write_lock:
            with self._lock:
                batches, self._pending = self._pending, []
                if self._journal_fd is not None:  # the next batch starts a new segment
                    self._covered.append((segment_path(self.directory, self.writer, self._segment), self._journal_fd))
                    self._journal_fd = None
                covered, self._covered = self._covered, []
            if not batches:
                self._forget(covered)
                return 0
            if self.journal != "off":
                for batch in batches:  # in their order; those put back by a failed write are chained already
                    if not batch.chain:
                        self._head = batch.link(self.family, self._head)
            try:
                path = write_file(self.directory, self.family, self.writer, self._files + 1, batches, self.journal == "fsync")
            except Exception:
                with self._lock:  # put them back, in order, for the next try
                    self._pending[:0] = batches
                    self._covered[:0] = covered
                    dropped = self._keep_within_bound()
                self._count_dropped(dropped)
                raise
            self._files += 1
            written = sum(len(b) for b in batches)
            self._forget(covered)
            with self._lock:
                self._pending_rows -= written
            self.written_rows += written
            if batches[-1].chain:  # the chain's head, outside the files: what `monitoring verify` shows is checked against it
                log.info("%s: %d rows to %s; chain head %d %s", self.family, written, path.name,
                         batches[-1].first_seq + len(batches[-1]) - 1, batches[-1].chain[-1])
            return written

    @staticmethod
    def _forget(segments: list[tuple[Path, int]]) -> None:
        """Remove journal segments whose rows are in a file (or were dropped), and let go of their locks."""
        for path, descriptor in segments:
            path.unlink(missing_ok=True)
            os.close(descriptor)

    def close(self, timeout_s: float = 30.0) -> int:
        """Stop the thread and write what is left (the service's shutdown hook)."""
        self._closed = True
        self._wake.set()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=timeout_s)
        deadline = time.monotonic() + timeout_s
        written = 0
        try:
            while self._pending and time.monotonic() < deadline:
                written += self.flush()
        except Exception:
            kept = ("they stay in its journal, written by the next process to start or by `python -m monitoring recover-log`"
                    if self.journal != "off" and not (self.write_error or "").startswith("journal") else "they are lost")
            log.exception("%s: the inference log could not write its last %d rows to %s; %s",
                          self.family, self.backlog, self.directory, kept)
        log.info("%s: inference log closed, %d rows written in all, %d dropped", self.family, self.written_rows,
                 self.dropped_rows)
        return written
