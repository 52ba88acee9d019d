"""One call on the wire: through the endpoint's concurrency cap and its sliding-window request
and token limits to the least-loaded replica, or through the vendor's batch API, booking the
tokens and cost of what came back.

This is the endpoint's lowest room (a mixin of :class:`~music_core.llm.endpoint.Endpoint`): it
neither retries nor reads the cache; the endpoint does both around it.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from .errors import LLMError, LLMTimeoutError
from .ratelimit import SlidingWindowLimiter, Slot
from .replicas import Replica, pick_replica, replica_failed
from .types import Completion, ProviderCall, Usage

if TYPE_CHECKING:
    from ..config.schema import EndpointConfig
    from .batch import BatchDispatcher
    from .errors import EndpointFatalError
    from .provider import ChatProvider
    from .usage import RoleUsage

MINUTE_S = 60.0  # the window providers count rpm/tpm in (a module constant so tests can shrink it)


class WireCalls:
    """The endpoint's rate-limited and batch calls; :class:`Endpoint` sets the state below."""

    name: str
    config: EndpointConfig
    provider: ChatProvider
    replicas: list[Replica]
    batch: BatchDispatcher | None
    fatal: EndpointFatalError | None
    successes: int
    wire_log: list[float]
    _sem: asyncio.Semaphore
    _limiters: dict[str, list[SlidingWindowLimiter]]
    _warm: bool

    @staticmethod
    def _make_limiters(c: EndpointConfig) -> dict[str, list[SlidingWindowLimiter]]:
        """rpm and tpm hold over every ``MINUTE_S`` window, as providers count them; a shorter
        ``rate_window_s`` adds a finer window that spreads the minute's budget evenly (never
        below one unit a window, so a small rpm is not rounded up past its minute)."""
        out: dict[str, list[SlidingWindowLimiter]] = {"rpm": [], "tpm": []}
        for key, per_minute in (("rpm", c.rpm), ("tpm", c.tpm)):
            if not per_minute:
                continue
            out[key].append(SlidingWindowLimiter(per_minute, MINUTE_S))
            w = c.rate_window_s
            if w != MINUTE_S:
                out[key].append(SlidingWindowLimiter(max(1.0, per_minute * w / MINUTE_S), w))
        return out

    async def _call_once(self, call: ProviderCall, usage: RoleUsage) -> list[Completion]:
        async with self._sem:
            slots: list[tuple[SlidingWindowLimiter, Slot]] = []
            try:
                for lim in self._limiters["rpm"]:
                    slots.append((lim, await lim.acquire(1)))
                tpm_slots = []
                if self._limiters["tpm"]:
                    estimate = self._estimate_tokens(call)
                    tpm_slots = [(lim, await lim.acquire(estimate)) for lim in self._limiters["tpm"]]
                if self.fatal is not None:  # another call found the endpoint broken while we waited
                    raise self.fatal
                replica = await pick_replica(self.replicas)
                if not replica.warm:
                    replica.provider.warm_up()  # outside the timeout: a cold SDK import is not the server
                    replica.warm = True
                self.wire_log.append(time.monotonic())
                usage.wire_calls += 1
                replica.in_flight += 1
                try:
                    try:
                        # asyncio.timeout, not wait_for: wait_for wraps the call in a task of its own.
                        async with asyncio.timeout(self.config.timeout_s if self.provider.enforce_timeout else None):
                            comps = await replica.provider.generate(call)
                    except TimeoutError:
                        raise LLMTimeoutError(f"{self.name}: no answer within {self.config.timeout_s} s") from None
                    if len(comps) != call.n:
                        raise LLMError(f"{self.name}: provider returned {len(comps)} completions for n={call.n}")
                except BaseException as exc:
                    if isinstance(exc, LLMError):
                        replica_failed(self.name, self.replicas, replica, exc, self.config.replica_cooldown_s)
                    for lim, slot in tpm_slots:  # a failed call may still have cost the server its estimate
                        lim.settle(slot)
                    raise
                finally:
                    replica.in_flight -= 1
                replica.served += 1
                replica.unreachable = False
                spent = sum((c.usage for c in comps), Usage())
                for lim, slot in tpm_slots:
                    lim.settle(slot, spent.total)
            finally:
                for lim, slot in slots:
                    lim.settle(slot)
            self.successes += 1
            usage.prompt_tokens += spent.prompt_tokens
            usage.completion_tokens += spent.completion_tokens
            usage.cost_usd += self.config.cost_usd(spent.prompt_tokens, spent.completion_tokens)
            return comps

    async def _call_batch(self, call: ProviderCall, usage: RoleUsage) -> list[Completion]:
        """One call through the vendor's batch API: no concurrency cap or rate limit here (the
        vendor queues a job's requests), the batch price, and answers a killed run's jobs
        already brought back count as cached."""
        if self.fatal is not None:
            raise self.fatal
        if not self._warm:
            self.provider.warm_up()
            self._warm = True
        assert self.batch is not None
        comps = await self.batch.call(call)
        if len(comps) != call.n:
            raise LLMError(f"{self.name}: batch item returned {len(comps)} completions for n={call.n}")
        self.successes += 1
        if all(c.cached for c in comps):
            return comps
        spent = sum((c.usage for c in comps), Usage())
        usage.wire_calls += 1
        usage.batched += 1
        usage.prompt_tokens += spent.prompt_tokens
        usage.completion_tokens += spent.completion_tokens
        usage.cost_usd += self.config.cost_usd(spent.prompt_tokens, spent.completion_tokens, batch=True)
        return comps

    def _estimate_tokens(self, call: ProviderCall) -> int:
        prompt = sum(self.provider.count_tokens(m["content"]) + 4 for m in call.messages)
        return prompt + call.params.max_tokens * call.n
