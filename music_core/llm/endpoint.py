"""An endpoint: one named model behind the execution layer. It turns a chat request into
sampling parameters, answers what it can from the cache, awaits identical requests already in
flight instead of sending them twice, retries with exponential backoff and jitter that honour
Retry-After (on retryable errors only), and stops the run on an error that is the endpoint's.

The call itself (concurrency cap, rate limits, replica choice, batch API) is
:mod:`music_core.llm.wire`; when an error is fatal, :mod:`music_core.llm.fatality`.
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING, Any

from ..data import Message
from ..errors import ConfigError
from .batch import BatchDispatcher, BatchJournal
from .cache import CallCache, identity_json, sample_keys
from .errors import EndpointFatalError, LLMError
from .fatality import fatal_error, is_fatal
from .provider import ChatProvider
from .replicas import Replica, any_healthy
from .types import Completion, ProviderCall, SamplingParams
from .usage import RoleUsage
from .wire import WireCalls

if TYPE_CHECKING:
    from ..config.schema import EndpointConfig

MAX_BACKOFF_S = 60.0


class Endpoint(WireCalls):
    """A named endpoint: a provider instance behind the limits, retries and cache.

    ``default_seed`` (the run seed) is the base of every sample's seed when the endpoint sets
    none: sample ``i`` of a request is sent with seed ``base + i``, so each sample index is its
    own request and the same request, index and run seed give the same sample."""

    def __init__(self, name: str, config: EndpointConfig, provider: ChatProvider, cache: CallCache | None,
                 default_seed: int = 0, replicas: list[ChatProvider] | None = None,
                 journal: BatchJournal | None = None):
        self.name = name
        self.config = config
        self.provider = provider  # the first replica: capabilities, token counts, the cache identity
        self.replicas = [Replica(p, p.endpoint.base_url) for p in (replicas or [provider])]
        self.cache = cache
        self.default_seed = default_seed
        self._sem = asyncio.Semaphore(config.concurrency)
        self._limiters = self._make_limiters(config)
        self._inflight: dict[str, asyncio.Future] = {}
        self.wire_log: list[float] = []  # start time of every wire call (rate-limit checks)
        self.successes = 0  # wire calls answered: before the first, a refused connection or 400 is fatal
        self.fatal: EndpointFatalError | None = None
        self._warm = False
        self._identity = identity_json(provider.cache_identity())
        self._rng = random.Random()
        self.batch: BatchDispatcher | None = None
        if config.mode == "batch":
            if not provider.supports_batch:
                raise ConfigError(f"config key 'models.{name}.mode': provider {config.provider!r} has no batch API; "
                                  f"use mode: online (batch mode: openai, anthropic, gemini)")
            if journal is None:
                raise ConfigError(f"config key 'models.{name}.mode': batch mode keeps its job journal beside the "
                                  f"LLM cache; set run.cache")
            import hashlib

            self.batch = BatchDispatcher(name, hashlib.sha256(self._identity.encode()).hexdigest()[:16], config,
                                         provider, journal, self.retry_delay)

    def params(self, *, temperature: float | None = None, top_p: float | None = None,
               max_tokens: int | None = None, stop: list[str] | tuple[str, ...] | None = None,
               seed: int | None = None, top_logprobs: int | None = None) -> SamplingParams:
        c = self.config
        if top_logprobs and not self.provider.supports_logprobs:
            raise ValueError(f"{self.config.provider}: this provider returns no log-probabilities (supports_logprobs)")
        return SamplingParams(
            temperature=c.temperature if temperature is None else temperature,
            max_tokens=c.max_tokens if max_tokens is None else max_tokens,
            top_p=c.top_p if top_p is None else top_p,
            stop=tuple(stop or ()),
            seed=(c.seed if c.seed is not None else self.default_seed) if seed is None else seed,
            top_logprobs=top_logprobs or None,
        )

    async def chat(self, messages: list[Message], usage: RoleUsage, *, n: int = 1, sample_index: int = 0,
                   **overrides: Any) -> list[Completion]:
        """``n`` samples with indices ``sample_index .. sample_index+n-1``; cached samples come
        from the cache, identical requests already in flight are awaited, the rest go out."""
        if self.fatal is not None:
            raise self.fatal
        params = self.params(**overrides)
        msgs = [Message(role=m["role"], content=m["content"]) for m in messages]
        indices = list(range(sample_index, sample_index + n))
        keys = sample_keys(self._identity, params, msgs, indices)
        usage.requests += 1
        usage.samples += n
        results: dict[int, Completion] = {}
        hits = self.cache.get_many(keys) if self.cache is not None else {}
        waits: list[tuple[int, asyncio.Future]] = []
        missing: list[int] = []
        for i, k in zip(indices, keys):
            if k in hits:
                results[i] = hits[k]
            elif k in self._inflight:
                waits.append((i, self._inflight[k]))
            else:
                missing.append(i)
        usage.cached_samples += len(hits)
        if missing:
            loop = asyncio.get_running_loop()
            futures = {i: loop.create_future() for i in missing}
            for i in missing:
                self._inflight[keys[i - sample_index]] = futures[i]
            try:
                fresh = await self._fetch(msgs, params, missing, usage, dict(zip(indices, keys)))
                if self.cache is not None:
                    self.cache.put_many([(keys[i - sample_index], fresh[i]) for i in missing],
                                        self.config.provider, self.config.model)
                for i in missing:
                    futures[i].set_result(fresh[i])
                    results[i] = fresh[i]
            except BaseException as exc:
                for fut in futures.values():
                    if not fut.done():
                        fut.set_exception(exc)
                        fut.exception()  # mark retrieved: waiters re-raise it, nobody else must
                raise
            finally:
                for i in missing:
                    self._inflight.pop(keys[i - sample_index], None)
        for i, fut in waits:
            done = await asyncio.shield(fut)
            results[i] = Completion(done.text, done.finish_reason, done.usage, cached=True, top_logprobs=done.top_logprobs)
            usage.cached_samples += 1
        return [results[i] for i in indices]

    async def _fetch(self, msgs: list[Message], params: SamplingParams, indices: list[int],
                     usage: RoleUsage, keys: dict[int, str]) -> dict[int, Completion]:
        # Each sample index is its own request: with a seed (seed + i) where the API has one,
        # so that sample i is the same whatever else was asked; else one call with ``n`` where
        # the API returns several; else one call per sample, concurrently.
        if self.provider.supports_n and not self.provider.supports_seed:
            groups = [indices]
        else:
            groups = [[i] for i in indices]
        out: dict[int, Completion] = {}

        async def one(group: list[int]) -> None:
            p = params
            if self.provider.supports_seed and params.seed is not None:
                p = SamplingParams(**{**params.__dict__, "seed": params.seed + group[0]})
            call = ProviderCall(tuple(msgs), p, tuple(group), key=keys[group[0]])
            comps = await self._call_with_retries(call, usage)
            out.update(zip(group, comps))

        if len(groups) == 1:
            await one(groups[0])  # the common case: no extra task, no extra loop iteration
        else:
            await asyncio.gather(*(one(g) for g in groups))
        return out

    def _fatal(self, exc: LLMError, retries_spent: bool) -> bool:
        """Is this error the endpoint's, not the request's (:func:`~.fatality.is_fatal`)?
        ``retries_spent``: the call will not be tried again."""
        answered = self.successes + (self.batch.answered if self.batch is not None else 0)
        return is_fatal(exc, answered=answered, replicas=self.replicas, retries_spent=retries_spent)

    def raise_fatal(self, exc: LLMError) -> None:
        """Stop the run on ``exc``, the endpoint's own error: every later call to this endpoint
        raises the same :class:`EndpointFatalError`."""
        if self.fatal is None:
            self.fatal = fatal_error(self.name, self.config, exc)
        raise self.fatal from None

    def retry_delay(self, attempt: int, exc: LLMError) -> float:
        """Exponential backoff with jitter; a server's Retry-After wins, up to
        ``max_retry_after_s`` (a day-long Retry-After must not hang a run: after the retries
        the work is left for the next run)."""
        delay = min(MAX_BACKOFF_S, self.config.retry_backoff_s * (2 ** attempt))
        delay = delay * (0.5 + self._rng.random() * 0.5)  # jitter: spread the herd
        if exc.retry_after is not None:
            delay = max(delay, min(exc.retry_after, self.config.max_retry_after_s))
        return delay

    async def _call_with_retries(self, call: ProviderCall, usage: RoleUsage) -> list[Completion]:
        attempt = 0
        while True:
            try:
                if self.batch is not None:
                    return await self._call_batch(call, usage)
                return await self._call_once(call, usage)
            except EndpointFatalError:
                raise
            except LLMError as exc:
                usage.errors[exc.kind] = usage.errors.get(exc.kind, 0) + 1
                retries_spent = not exc.retryable or attempt >= self.config.max_retries
                if self._fatal(exc, retries_spent):
                    self.raise_fatal(exc)
                if retries_spent:
                    raise
                # A replica's fault goes straight to another healthy replica; else back off.
                delay = 0.0 if exc.replica_fault and any_healthy(self.replicas) else self.retry_delay(attempt, exc)
                attempt += 1
                usage.retries += 1
                await asyncio.sleep(delay)  # outside the semaphore: a backing-off call holds no slot
