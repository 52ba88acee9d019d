"""The vendor-neutral half of a loopback batch API: jobs that end after a delay, each item
answered by the vendor's own online handler (so a batch answer equals the online one), expiry,
cancellation, failed items, and a count of every item ever submitted (to prove nothing was paid
twice). Provider plugins put their vendor's REST dialect on top (``music_openai.testing``, ...).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# (the item's request body) -> (HTTP status, response body): the vendor's online handler
Answer = Callable[[dict[str, Any]], "tuple[int, Any]"]


@dataclass
class Job:
    id: str
    items: list[tuple[str, dict[str, Any]]]  # (custom_id, request body)
    created: float
    done_at: float
    model: str = ""
    label: str = ""  # the client's tag (OpenAI metadata, Gemini display name)
    ordinal: int = 0  # 0: the first job created
    state: str = "running"  # running, completed, expired, cancelled
    results: dict[str, tuple[int, Any]] = field(default_factory=dict)  # custom_id -> (status, body)
    ended: float | None = None


class BatchJobs:
    """``complete_after_s``: how long a job runs. ``expire_jobs``: ordinals (0 = the first job
    created) of jobs that expire, answering only ``expire_answered`` of their items.
    ``item_fault_rate``: the share of items (seeded) that fail with a 500 inside a completed job,
    each item at most once, so that its resubmission succeeds. ``hang_after_create``: ordinals of
    jobs whose creation is answered only after ``hang_s`` (the job exists, the client times out:
    what a kill between the vendor making a job and the client recording it looks like)."""

    def __init__(self, answer: Answer, *, complete_after_s: float = 0.2, expire_jobs: tuple[int, ...] = (),
                 expire_answered: float = 0.5, item_fault_rate: float = 0.0, seed: int = 0, prefix: str = "batch",
                 hang_after_create: tuple[int, ...] = (), hang_s: float = 30.0):
        self.answer = answer
        self.complete_after_s = complete_after_s
        self.expire_jobs = set(expire_jobs)
        self.expire_answered = expire_answered
        self.item_fault_rate = item_fault_rate
        self.hang_after_create = set(hang_after_create)
        self.hang_s = hang_s
        self._rng = random.Random(seed)
        self._ids = itertools.count()
        self._prefix = prefix
        self._lock = threading.Lock()
        self.jobs: dict[str, Job] = {}
        self.items_seen: Counter[str] = Counter()  # custom_id -> times submitted
        self.faulted: set[str] = set()
        self.unanswered: Counter[str] = Counter()  # custom_id -> jobs that ended without a 200 for it
        self.polls = 0

    def create(self, items: list[tuple[str, dict[str, Any]]], model: str = "", label: str = "") -> Job:
        with self._lock:
            n = next(self._ids)
            job = Job(f"{self._prefix}_{n:04d}", items, time.time(), time.time() + self.complete_after_s, model, label, n)
            self.jobs[job.id] = job
            self.items_seen.update(cid for cid, _ in items)
            return job

    def created(self, job: Job, response: Any) -> Any:
        """The answer to a creation: at once, or (``hang_after_create``) after the client gave up."""
        if job.ordinal not in self.hang_after_create:
            return response

        async def late() -> Any:
            await asyncio.sleep(self.hang_s)
            return response
        return late()

    def newest_first(self) -> list[Job]:
        with self._lock:
            return sorted(self.jobs.values(), key=lambda j: -j.ordinal)

    def get(self, job_id: str) -> Job | None:
        """The job, run to its end once its time has come."""
        with self._lock:
            self.polls += 1
            job = self.jobs.get(job_id)
            if job is not None and job.state == "running" and time.time() >= job.done_at:
                self._finish(job, "expired" if job.ordinal in self.expire_jobs else "completed")
            return job

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a running job: like expiry, the items it had not run come back unanswered."""
        with self._lock:
            job = self.jobs.get(job_id)
            if job is not None and job.state == "running":
                self._finish(job, "cancelled")
            return job

    def _finish(self, job: Job, state: str) -> None:
        share = 1.0 if state == "completed" else self.expire_answered if state == "expired" else 0.0
        for cid, body in job.items[: int(len(job.items) * share)]:
            if cid not in self.faulted and self.item_fault_rate and self._rng.random() < self.item_fault_rate:
                self.faulted.add(cid)
                job.results[cid] = (500, {"error": {"message": "item failed (injected)", "type": "server_error"}})
            else:
                job.results[cid] = self.answer(body)
        for cid, _ in job.items:
            if job.results.get(cid, (0,))[0] != 200:
                self.unanswered[cid] += 1
        job.state = state
        job.ended = time.time()

    def counts(self, job: Job) -> dict[str, int]:
        ok = sum(1 for s, _ in job.results.values() if s == 200)
        return {"total": len(job.items), "completed": ok, "failed": len(job.results) - ok}

    def resubmitted(self) -> dict[str, int]:
        """Items submitted again after a job had answered them, or while a job still held them:
        none when nothing was paid twice (items that failed or that a job never ran may go again)."""
        return {cid: n for cid, n in self.items_seen.items() if n > 1 + self.unanswered[cid]}


def multipart_file(body: bytes, content_type: str) -> bytes:
    """The bytes of the ``file`` field of a multipart/form-data body."""
    boundary = content_type.split("boundary=", 1)[1].strip().strip('"').encode()
    for part in body.split(b"--" + boundary):
        head, _, data = part.partition(b"\r\n\r\n")
        if b'name="file"' in head:
            return data[: -2] if data.endswith(b"\r\n") else data
    raise ValueError("no file field in the multipart body")
