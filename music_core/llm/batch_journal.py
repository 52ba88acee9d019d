"""The batch-mode journal: which call went out in which vendor job, and what came back.

It lives in SQLite tables beside the LLM cache, and every write is committed before it returns,
so what a killed run had submitted or collected is there for the rerun: the job id of every
submitted item is committed before anything waits on the job, a job's results are committed in
one transaction when it ends, and a submission is recorded (as ``pending:<label>``) before it is
sent. Kept apart from the dispatcher (:mod:`music_core.llm.batch`), which decides what to
submit and when, because this is the part whose format a later run must be able to read.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from . import errors as E
from .types import Completion

PENDING = "pending:"  # the job id of a submission whose vendor id is not known yet

ERROR_KINDS: dict[str, type[E.LLMError]] = {
    cls.kind: cls for cls in (E.RateLimitedError, E.LLMTimeoutError, E.ServerError, E.LLMConnectionError,
                              E.BatchUnfinishedError, E.BadRequestError, E.AuthError, E.NotFoundError,
                              E.SafetyBlockedError, E.EmptyResponseError)
}


class BatchJournal:
    """Which call went out in which vendor job, and what came back (SQLite; every write is
    committed before it returns, so a SIGKILL loses nothing written)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), timeout=60, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=60000")
        self._db.execute("CREATE TABLE IF NOT EXISTS batch_jobs (job_id TEXT PRIMARY KEY, endpoint TEXT, "
                         "provider TEXT, state TEXT, items INTEGER, created REAL, updated REAL, detail TEXT)")
        self._db.execute("CREATE TABLE IF NOT EXISTS batch_items (custom_id TEXT, job_id TEXT, state TEXT, "
                         "result TEXT, error_kind TEXT, error TEXT, PRIMARY KEY (custom_id, job_id))")
        self._lock = threading.Lock()

    def latest(self, custom_id: str) -> tuple[str, str, Any] | None:
        """The item's last job: (job_id, state, payload). state is ``submitted`` (job not yet
        collected), ``done`` (payload: the completions), or ``failed`` (payload: the error)."""
        with self._lock:
            row = self._db.execute("SELECT job_id, state, result, error_kind, error FROM batch_items "
                                   "WHERE custom_id = ? ORDER BY rowid DESC LIMIT 1", (custom_id,)).fetchone()
        if row is None:
            return None
        job_id, state, result, kind, error = row
        if state == "done":
            return job_id, state, [Completion.from_json(c) for c in json.loads(result)]
        if state == "failed":
            return job_id, state, ERROR_KINDS.get(kind, E.ServerError)(error or "batch item failed")
        return job_id, state, None

    def pending(self, label: str, endpoint: str, provider: str, custom_ids: list[str]) -> str:
        """Record a submission before it is sent: its items wait on ``pending:<label>`` until the
        vendor's job id is known, so that a kill in between leaves something to look for."""
        job_id = PENDING + label
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute("INSERT OR REPLACE INTO batch_jobs VALUES (?, ?, ?, 'pending', ?, ?, ?, '')",
                             (job_id, endpoint, provider, len(custom_ids), now, now))
            self._db.executemany("INSERT OR REPLACE INTO batch_items VALUES (?, ?, 'submitted', NULL, NULL, NULL)",
                                 [(cid, job_id) for cid in custom_ids])
            self._db.execute("COMMIT")
        return job_id

    def resolve(self, pending_id: str, job_id: str) -> None:
        """The vendor accepted the submission as ``job_id``: its items now wait on that job."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute("UPDATE batch_jobs SET job_id = ?, state = 'submitted', updated = ? WHERE job_id = ?",
                             (job_id, time.time(), pending_id))
            self._db.execute("UPDATE batch_items SET job_id = ? WHERE job_id = ?", (job_id, pending_id))
            self._db.execute("COMMIT")

    def job(self, job_id: str) -> tuple[float, int]:
        """When a job (or pending submission) was recorded, and how many items it holds."""
        with self._lock:
            row = self._db.execute("SELECT created, items FROM batch_jobs WHERE job_id = ?", (job_id,)).fetchone()
        return (float(row[0]), int(row[1])) if row else (time.time(), 0)

    def jobs(self) -> list[dict[str, Any]]:
        """Every job (and pending submission) recorded, oldest first."""
        keys = ("job_id", "endpoint", "provider", "state", "items", "created", "updated", "detail")
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(keys)} FROM batch_jobs ORDER BY created").fetchall()
        return [dict(zip(keys, r)) for r in rows]

    def known_jobs(self) -> set[str]:
        with self._lock:
            return {j for (j,) in self._db.execute("SELECT job_id FROM batch_jobs")}

    def job_items(self, job_id: str) -> list[str]:
        with self._lock:
            return [c for (c,) in self._db.execute("SELECT custom_id FROM batch_items WHERE job_id = ?", (job_id,))]

    def collected(self, job_id: str, outcome: dict[str, list[Completion] | E.LLMError], detail: str) -> None:
        """One transaction: the job's state and every item's answer or error."""
        rows: list[tuple[str, str | None, str | None, str | None, str, str]] = []
        for cid, got in outcome.items():
            if isinstance(got, E.LLMError):
                rows.append(("failed", None, got.kind, str(got)[:2000], cid, job_id))
            else:
                rows.append(("done", json.dumps([c.to_json() for c in got], ensure_ascii=False), None, None, cid, job_id))
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("UPDATE batch_items SET state = ?, result = ?, error_kind = ?, error = ? "
                                 "WHERE custom_id = ? AND job_id = ?", rows)
            self._db.execute("UPDATE batch_jobs SET state = 'collected', updated = ?, detail = ? WHERE job_id = ?",
                             (time.time(), detail, job_id))
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()
