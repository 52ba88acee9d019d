"""Batch mode: an endpoint's calls go out through the vendor's batch API, one job per round.

The rollout code is unchanged. Every conversation awaits its next call as usual; the calls that
arrive at an endpoint while a round forms are held until none has come for ``batch_linger_s``
(the wavefront has reached its next step everywhere), then submitted as one job (split at the
vendor's limits), polled with a growing interval, and resolved from the job's results.

What survives a kill is in a :class:`BatchJournal` beside the LLM cache (its own module,
:mod:`music_core.llm.batch_journal`): the job id of every submitted item is committed before
anything waits on the job, and a job's results are committed in one transaction when it ends.
This module is the dispatcher that decides what to submit and when. A rerun makes the same
calls (earlier rounds come from the cache), finds them in the journal and re-attaches to their
jobs, running or ended, instead of submitting them again. Items a job did not run (it expired
or was cancelled) and items that failed are submitted again in a later round; nothing that
succeeded is paid for twice.

A submission is recorded (as ``pending:<label>``) before it is sent, and the label goes with the
job where the vendor keeps one (OpenAI metadata, Gemini display name). A kill between the vendor
making the job and the journal recording its id, or a submission that failed in a way that may
have come after the job was made (a timeout), is resolved by looking the job up by its label
(Anthropic keeps none: by creation time and request count); only if none is found are the items
sent again.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import progress
from . import errors as E
from .batch_journal import ERROR_KINDS, PENDING, BatchJournal
from .types import Completion, ProviderCall

if TYPE_CHECKING:
    from ..config.schema import EndpointConfig
    from .provider import ChatProvider

__all__ = ["ERROR_KINDS", "PENDING", "WAITING_NOTE_S", "BatchDispatcher", "BatchJournal", "BatchStats"]

WAITING_NOTE_S = 300.0  # how often a job still running is reported


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
