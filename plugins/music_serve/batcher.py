"""One queue per reward model: requests' sequences meet here, wait a few milliseconds for company
up to a token budget, and are scored together in one call of the packed scorer. A sequence's
reward never depends on its batch (the scorer attends each sequence to itself only). The queue
is bounded: a full one refuses at once (the server answers 429) instead of growing."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .metrics import Metrics


class QueueFull(Exception):
    pass


class ScorerFailed(Exception):
    pass


@dataclass
class _Item:
    ids: list[int]
    future: asyncio.Future[float]
    queued: float = field(default_factory=time.perf_counter)


class BatchQueue:
    def __init__(self, name: str, score: Callable[[list[list[int]]], list[float]], metrics: Metrics, *,
                 max_wait_s: float = 0.005, max_batch_tokens: int = 16384, max_items: int = 2048):
        self.name, self.score, self.metrics = name, score, metrics
        self.max_wait_s, self.max_batch_tokens, self.max_items = max_wait_s, max_batch_tokens, max_items
        self._items: deque[_Item] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self.name}")

    def depth(self) -> int:
        return len(self._items)

    async def submit(self, sequences: list[list[int]]) -> list[float]:
        if self._closing:
            raise QueueFull("the server is shutting down")
        if len(self._items) + len(sequences) > self.max_items:
            raise QueueFull(f"{len(self._items)} sequences are waiting for {self.name!r} (at most {self.max_items})")
        loop = asyncio.get_running_loop()
        items = [_Item(ids, loop.create_future()) for ids in sequences]
        self._items.extend(items)
        self.metrics.queue_depth.set(self.name, len(self._items))
        self._wake.set()
        return list(await asyncio.gather(*(i.future for i in items)))

    def _take(self) -> list[_Item]:
        batch: list[_Item] = []
        tokens = 0
        while self._items and (not batch or tokens + len(self._items[0].ids) <= self.max_batch_tokens):
            item = self._items.popleft()
            batch.append(item)
            tokens += len(item.ids)
        return batch

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if not self._items:
                self._wake.clear()
                if self._closing:
                    return
                continue
            deadline = time.perf_counter() + self.max_wait_s  # let concurrent requests join
            while (sum(len(i.ids) for i in self._items) < self.max_batch_tokens and not self._closing
                   and (left := deadline - time.perf_counter()) > 0):
                await asyncio.sleep(min(left, 0.001))
            batch = self._take()
            self.metrics.queue_depth.set(self.name, len(self._items))
            t0 = time.perf_counter()
            try:
                rewards = await asyncio.to_thread(self.score, [i.ids for i in batch])
                if len(rewards) != len(batch):
                    raise ScorerFailed(f"the scorer returned {len(rewards)} rewards for {len(batch)} sequences")
            except Exception as exc:  # this batch's requests answer 500; the server keeps serving
                self.metrics.scorer_errors.inc(self.name)
                for i in batch:
                    if not i.future.done():
                        i.future.set_exception(ScorerFailed(f"{type(exc).__name__}: {exc}"))
                continue
            self.metrics.batch_size.observe(self.name, len(batch))
            self.metrics.batch_seconds.observe(self.name, time.perf_counter() - t0)
            for i, r in zip(batch, rewards):
                if not i.future.done():
                    i.future.set_result(float(r))

    async def drain(self) -> None:
        """Score what is queued, then stop."""
        self._closing = True
        self._wake.set()
        if self._worker is not None:
            await self._worker


