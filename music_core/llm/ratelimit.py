"""A strict sliding-window rate limiter: at most ``limit`` units (requests or tokens) in any
window of ``window_s`` seconds *as the server counts them*.

Strict on purpose: a token bucket lets a full bucket plus a window's refill through in one
window, which is exactly how providers' limits get exceeded. And conservative about time: the
server stamps a request when it arrives, somewhere between our ``acquire`` (before the client
is built and the bytes are sent) and the answer. So a unit is held from ``acquire`` until
``settle`` and only then starts its ``window_s`` countdown: whatever the transport delay, no
server-side window can hold more than ``limit`` units.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque


class Slot:
    """One acquired unit of a limiter; ``settle`` it when the call is over (any outcome)."""

    __slots__ = ("weight", "settled")

    def __init__(self, weight: float):
        self.weight = weight
        self.settled = False


class SlidingWindowLimiter:
    def __init__(self, limit: float, window_s: float = 60.0, clock=time.monotonic):
        if limit <= 0 or window_s <= 0:
            raise ValueError("limit and window_s must be positive")
        self.limit = float(limit)
        self.window_s = float(window_s)
        self._clock = clock
        self._held = 0.0                       # acquired, call not over yet
        self._done: deque[tuple[float, float]] = deque()  # (settled at, weight)
        self._done_total = 0.0
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()

    def _expire(self, now: float) -> None:
        while self._done and self._done[0][0] <= now - self.window_s:
            self._done_total -= self._done.popleft()[1]

    def used(self) -> float:
        self._expire(self._clock())
        return self._held + self._done_total

    async def acquire(self, weight: float = 1.0) -> Slot:
        """Wait until ``weight`` more units fit, hold them, and return the slot."""
        weight = min(float(weight), self.limit)  # one oversized request must still pass, alone
        async with self._lock:  # FIFO: waiters are served in arrival order
            while True:
                now = self._clock()
                self._expire(now)
                if self._held + self._done_total + weight <= self.limit + 1e-9:
                    self._held += weight
                    return Slot(weight)
                # Wake when enough settled units leave the window, or when a held one settles.
                need = self._held + self._done_total + weight - self.limit
                freed, wake = 0.0, None
                for ts, w in self._done:
                    freed += w
                    if freed >= need - 1e-9:
                        wake = ts + self.window_s
                        break
                self._changed.clear()
                timeout = None if wake is None else max(wake - now, 0.001)
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout)
                except TimeoutError:
                    pass

    def settle(self, slot: Slot, weight: float | None = None) -> None:
        """The call is over: its units (corrected to ``weight``, e.g. the tokens it really
        used) count against the window from now on."""
        if slot.settled:
            return
        slot.settled = True
        self._held -= slot.weight
        w = slot.weight if weight is None else max(0.0, float(weight))
        if w > 0:
            self._done.append((self._clock(), w))
            self._done_total += w
        self._changed.set()
