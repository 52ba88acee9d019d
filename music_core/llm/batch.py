"""Batch mode: an endpoint's calls go out through the vendor's batch API, one job per round.

The rollout code is unchanged. Every conversation awaits its next call as usual; the calls that
arrive at an endpoint while a round forms are held until none has come for ``batch_linger_s``
(the wavefront has reached its next step everywhere), then submitted as one job (split at the
vendor's limits), polled with a growing interval, and resolved from the job's results.

What survives a kill is in a :class:`BatchJournal` beside the LLM cache: the job id of every
submitted item is committed before anything waits on the job, and a job's results are committed
in one transaction when it ends. A rerun makes the same calls (earlier rounds come from the
cache), finds them in the journal and re-attaches to their jobs, running or ended, instead of
submitting them again. Items a job did not run (it expired or was cancelled) and items that
failed are submitted again in a later round; nothing that succeeded is paid for twice.

A submission is recorded (as ``pending:<label>``) before it is sent, and the label goes with the
job where the vendor keeps one (OpenAI metadata, Gemini display name). A kill between the vendor
making the job and the journal recording its id, or a submission that failed in a way that may
have come after the job was made (a timeout), is resolved by looking the job up by its label
(Anthropic keeps none: by creation time and request count); only if none is found are the items
sent again.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import progress
from . import errors as E
from .types import Completion, ProviderCall

if TYPE_CHECKING:
    from ..config.schema import EndpointConfig
    from .provider import ChatProvider

PENDING = "pending:"  # the job id of a submission whose vendor id is not known yet
WAITING_NOTE_S = 300.0  # how often a job still running is reported

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


@dataclass
class BatchStats:
    """What batch mode did at one endpoint in this run."""

    jobs_submitted: int = 0
    jobs_reattached: int = 0
    items_submitted: int = 0
    items_from_journal: int = 0  # answered by a job a killed run had already collected
    items_resubmitted: int = 0  # failed or left unrun by their job, sent again
    rounds: int = 0  # submissions of a formed round (one or more jobs each)
    job_states: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class BatchDispatcher:
    """One endpoint's batch mode: collects calls into rounds, submits, polls, resolves."""

    def __init__(self, name: str, identity: str, config: EndpointConfig, provider: ChatProvider,
                 journal: BatchJournal, retry_delay: Callable[[int, E.LLMError], float]):
        self.name, self.identity, self.config, self.provider, self.journal = name, identity, config, provider, journal
        self.retry_delay = retry_delay  # the endpoint's backoff (jitter, Retry-After capped)
        self.stats = BatchStats()
        self._queue: list[tuple[str, ProviderCall, asyncio.Future]] = []
        self._last_arrival = 0.0
        self._flusher: asyncio.Task | None = None
        self._waiters: dict[str, list[asyncio.Future]] = {}
        self._pollers: dict[str, asyncio.Task] = {}
        self.answered = 0  # items any job answered this run (the endpoint works: a 400 is one request's)

    @property
    def max_requests(self) -> int:
        limit = self.provider.batch_limit_requests
        return min(limit, self.config.batch_max_requests) if self.config.batch_max_requests else limit

    async def call(self, call: ProviderCall) -> list[Completion]:
        """The completions of one call, through a batch job (or the journal, or a job a killed
        run submitted). Raises the item's typed error; the endpoint retries the retryable ones."""
        cid = call.key
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        found = self.journal.latest(cid)
        if found is not None:
            job_id, state, payload = found
            if state == "done":
                self.stats.items_from_journal += 1
                return [Completion(c.text, c.finish_reason, c.usage, cached=True, top_logprobs=c.top_logprobs)
                        for c in payload]
            if state == "submitted":  # a job of this or a killed run: wait for it, never resubmit
                self._waiters.setdefault(cid, []).append(fut)
                self._ensure_poller(job_id, reattached=job_id not in self._pollers)
                return await fut
            self.stats.items_resubmitted += 1  # failed or unrun: goes out again
        self._queue.append((cid, call, fut))
        self._last_arrival = loop.time()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_when_formed())
        return await fut

    async def _flush_when_formed(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            wait = self._last_arrival + self.config.batch_linger_s - loop.time()
            if wait > 0 and len(self._queue) < self.max_requests:
                await asyncio.sleep(wait)
                continue
            round_items, self._queue = self._queue, []
            self.stats.rounds += 1
            for chunk in self._chunks(round_items):
                await self._submit(chunk)

    def _chunks(self, items: list[tuple[str, ProviderCall, asyncio.Future]]) -> list[list[Any]]:
        out: list[list[Any]] = [[]]
        size = 0
        for item in items:
            b = self.provider.batch_item_bytes(item[1])
            if out[-1] and (len(out[-1]) >= self.max_requests or size + b > self.provider.batch_limit_bytes):
                out.append([])
                size = 0
            out[-1].append(item)
            size += b
        return [c for c in out if c]

    async def _submit(self, chunk: list[tuple[str, ProviderCall, asyncio.Future]]) -> None:
        unique: dict[str, ProviderCall] = {}
        for cid, call, fut in chunk:
            self._waiters.setdefault(cid, []).append(fut)
            unique.setdefault(cid, call)
        label = f"music-{uuid.uuid4().hex[:24]}"
        pending_id = self.journal.pending(label, self.identity, self.config.provider, list(unique))
        try:
            job_id = await self.provider.batch_submit(list(unique.items()), label)
        except Exception as exc:
            err = exc if isinstance(exc, E.LLMError) else E.ServerError(f"{self.name}: batch submission failed: {exc}")
            if not err.retryable:  # refused: no job was made, the items may go again
                self.journal.collected(pending_id, {cid: err for cid in unique}, f"refused: {str(err)[:200]}")
            # A transient failure (a timeout, a dropped connection) may come after the vendor made
            # the job: the submission stays pending, and the retry looks for it before sending again.
            self._fail(list(unique), err)
            return
        self.journal.resolve(pending_id, job_id)
        self.stats.jobs_submitted += 1
        self.stats.items_submitted += len(unique)
        progress.log(f"{self.name}: batch job {job_id} submitted ({_requests(len(unique))})")
        self._ensure_poller(job_id, reattached=False)

    def _ensure_poller(self, job_id: str, *, reattached: bool) -> None:
        running = self._pollers.get(job_id)
        if running is not None and not running.done():
            return
        # (a poller that gave up after an outage is started again when the call is retried)
        if reattached and not job_id.startswith(PENDING):
            self.stats.jobs_reattached += 1
            progress.log(f"{self.name}: re-attached to batch job {job_id} (submitted by an earlier run)")
        self._pollers[job_id] = asyncio.ensure_future(self._poll(job_id))

    async def _find(self, pending_id: str) -> str | None:
        """The vendor's job for a submission interrupted before its id was recorded, if the
        vendor made one: one candidate no other journal entry claims, else None."""
        created, n = self.journal.job(pending_id)
        label = pending_id.removeprefix(PENDING)
        candidates = await self._vendor(lambda: self.provider.batch_find(label, created, n))
        known = self.journal.known_jobs()
        fresh = [c for c in dict.fromkeys(candidates) if c not in known]
        return fresh[0] if len(fresh) == 1 else None

    async def _vendor(self, make: Any) -> Any:
        """One status or results request, retried on transient errors like any call."""
        attempt = 0
        while True:
            try:
                return await make()
            except E.LLMError as exc:
                if not exc.retryable or attempt >= self.config.max_retries:
                    raise
                await asyncio.sleep(self.retry_delay(attempt, exc))
                attempt += 1

    async def _poll(self, job_id: str) -> None:
        items = self.journal.job_items(job_id)
        delay = self.config.batch_poll_s
        started = last_said = time.monotonic()
        try:
            if job_id.startswith(PENDING):
                found = await self._find(job_id)
                if found is None:
                    lost = E.BatchUnfinishedError(f"{self.name}: a submission interrupted before the vendor made a "
                                                  f"job ({job_id}); sent again")
                    self.journal.collected(job_id, {cid: lost for cid in items}, "never submitted")
                    self._fail(items, lost)
                    return
                self.journal.resolve(job_id, found)
                self.stats.jobs_reattached += 1
                progress.log(f"{self.name}: found batch job {found} of a submission interrupted before its id was "
                             f"recorded; re-attached")
                self._pollers[found] = asyncio.current_task()  # type: ignore[assignment]
                job_id = found
            while True:
                status = await self._vendor(lambda: self.provider.batch_status(job_id))
                if status.state == "running":
                    if time.monotonic() - last_said >= WAITING_NOTE_S:  # a job can take hours: say it is alive
                        last_said = time.monotonic()
                        progress.log(f"{self.name}: batch job {job_id} {status.detail} ({_requests(len(items))}, "
                                     f"waiting {(last_said - started) / 60:.0f} min)")
                    await asyncio.sleep(delay)
                    delay = min(self.config.batch_poll_max_s, delay * 1.5)
                    continue
                break
            if status.state == "failed":
                err: E.LLMError = E.BadRequestError(f"{self.name}: batch job {job_id} failed: {status.detail}")
                self.journal.collected(job_id, {cid: err for cid in items}, f"failed: {status.detail}")
                self._count("failed")
                self._fail(items, err)
                return
            results = await self._vendor(lambda: self.provider.batch_results(job_id))
        except BaseException as exc:
            # The job stays 'submitted' in the journal: the next run re-attaches to it.
            err = exc if isinstance(exc, E.LLMError) else E.ServerError(f"{self.name}: batch job {job_id}: {exc}")
            self._fail(items, err)
            if not isinstance(exc, Exception):
                raise
            return
        unfinished = E.BatchUnfinishedError(f"{self.name}: batch job {job_id} ended ({status.detail}) "
                                            f"without running this request")
        outcome: dict[str, list[Completion] | E.LLMError] = {cid: results.get(cid, unfinished) for cid in items}
        self.journal.collected(job_id, outcome, status.detail)
        self._count(status.detail or "ended")
        ok = sum(1 for v in outcome.values() if not isinstance(v, E.LLMError))
        self.answered += ok  # before any waiter runs: a failed item resolved first must see it
        progress.log(f"{self.name}: batch job {job_id} {status.detail or 'ended'}: {ok} of {_requests(len(items))} "
                     f"answered")
        for cid, got in outcome.items():
            for fut in self._waiters.pop(cid, []):
                if fut.done():
                    continue
                if isinstance(got, E.LLMError):
                    fut.set_exception(got)
                    fut.exception()  # retrieved: the waiting call re-raises it
                else:
                    fut.set_result(got)

    def _count(self, state: str) -> None:
        self.stats.job_states[state] = self.stats.job_states.get(state, 0) + 1

    def _fail(self, cids: list[str], err: BaseException) -> None:
        for cid in cids:
            for fut in self._waiters.pop(cid, []):
                if not fut.done():
                    fut.set_exception(err)
                    fut.exception()

    async def aclose(self) -> None:
        tasks = [t for t in [self._flusher, *self._pollers.values()] if t is not None and not t.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _requests(n: int) -> str:
    return f"{n} request" + ("" if n == 1 else "s")
