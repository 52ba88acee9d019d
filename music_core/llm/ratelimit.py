"""A strict sliding-window rate limiter: at most ``limit`` units (requests or tokens) in any
window of ``window_s`` seconds. Strict on purpose: a token bucket lets a full bucket plus a
window's refill through in one window, which is exactly how providers' limits get exceeded."""

from __future__ import annotations

import asyncio
import time
from collections import deque


class SlidingWindowLimiter:
    def __init__(self, limit: float, window_s: float = 60.0, clock=time.monotonic):
        if limit <= 0 or window_s <= 0:
            raise ValueError("limit and window_s must be positive")
        self.limit = float(limit)
        self.window_s = float(window_s)
        self._clock = clock
        self._events: deque[list[float]] = deque()  # [timestamp, weight]; weight may be corrected
        self._used = 0.0
        self._lock = asyncio.Lock()

    def _expire(self, now: float) -> None:
        while self._events and self._events[0][0] <= now - self.window_s:
            self._used -= self._events.popleft()[1]

    async def acquire(self, weight: float = 1.0) -> list[float]:
        """Wait until ``weight`` more units fit in the window, record them, and return a handle
        that :meth:`adjust` can correct once the real cost is known (tokens after a call)."""
        weight = min(float(weight), self.limit)  # one oversized request must still pass, alone
        async with self._lock:  # FIFO: waiters are served in arrival order
            while True:
                now = self._clock()
                self._expire(now)
                if self._used + weight <= self.limit + 1e-9:
                    event = [now, weight]
                    self._events.append(event)
                    self._used += weight
                    return event
                # Sleep until enough of the oldest events leave the window.
                need, freed, wake = self._used + weight - self.limit, 0.0, now
                for ts, w in self._events:
                    freed += w
                    wake = ts + self.window_s
                    if freed >= need - 1e-9:
                        break
                await asyncio.sleep(max(wake - now, 0.001))

    def adjust(self, event: list[float], weight: float) -> None:
        """Replace a recorded weight by the actual one (e.g. the tokens a call really used)."""
        if event in self._events:
            self._used += weight - event[1]
            event[1] = weight

    def used(self) -> float:
        self._expire(self._clock())
        return self._used
