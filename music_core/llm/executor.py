"""The one execution layer under every provider: per-endpoint concurrency caps, sliding-window
request and token limits, retries with exponential backoff and jitter that honour Retry-After
(on retryable errors only), a content-addressed cache with in-flight de-duplication, and usage
and cost accounting per role."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .. import progress
from ..data import Message
from ..errors import ConfigError
from .batch import BatchDispatcher, BatchJournal
from .cache import CallCache, identity_json, sample_keys
from .errors import (
    BadRequestError,
    EndpointFatalError,
    LLMConnectionError,
    LLMError,
    LLMTimeoutError,
    MalformedResponseError,
    ServerError,
    UnreachableError,
)
from .provider import ChatProvider
from .ratelimit import SlidingWindowLimiter, Slot
from .types import Completion, ProviderCall, SamplingParams, Usage

if TYPE_CHECKING:
    from ..config.schema import EndpointConfig, MusicConfig
    from ..registry import Registry

MAX_BACKOFF_S = 60.0
MINUTE_S = 60.0  # the window providers count rpm/tpm in (a module constant so tests can shrink it)


@dataclass
class RoleUsage:
    """What one role spent: wire calls, cache hits, retries, typed errors, tokens and cost."""

    requests: int = 0
    samples: int = 0
    cached_samples: int = 0
    wire_calls: int = 0
    retries: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    batched: int = 0  # wire calls answered through a vendor batch job (at the batch price)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Failures that are the server's, not the request's: with several replicas, the replica that
# gave one is cooled down and the call goes to another at once.
REPLICA_FAULTS = (LLMConnectionError, LLMTimeoutError, ServerError)


@dataclass
class Replica:
    """One server behind an endpoint (``base_urls``), with its load and health."""

    provider: ChatProvider
    url: str | None
    in_flight: int = 0
    served: int = 0
    failures: int = 0
    cooldown_until: float = 0.0
    unreachable: bool = False  # refused the connection and has not answered since
    warm: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "served": self.served, "failures": self.failures}


class Endpoint:
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
        """Is this error the endpoint's, not the request's? Then it stops the run.
        ``retries_spent``: the call will not be tried again."""
        if exc.endpoint_fault:
            return True
        # Before the endpoint has ever answered, a refused connection is a wrong base_url and a
        # 400 a parameter the server does not take; after, they are an outage and one bad prompt.
        # With replicas, one that refuses is cooled down; only all of them refusing is fatal.
        # Nothing but malformed answers through every retry is not an API at that base_url.
        answered = self.successes + (self.batch.answered if self.batch is not None else 0)
        if answered == 0 and isinstance(exc, UnreachableError) and len(self.replicas) > 1:
            return all(r.unreachable for r in self.replicas)
        if answered == 0 and retries_spent and isinstance(exc, MalformedResponseError):
            return True
        return answered == 0 and isinstance(exc, (UnreachableError, BadRequestError))

    def _raise_fatal(self, exc: LLMError) -> None:
        if self.fatal is None:
            c = self.config
            self.fatal = EndpointFatalError(exc, endpoint=self.name, provider=c.provider, model=c.model,
                                            base_url=c.base_url)
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
                    self._raise_fatal(exc)
                if retries_spent:
                    raise
                # A replica's fault goes straight to another healthy replica; else back off.
                delay = 0.0 if exc.replica_fault and self._healthy() else self.retry_delay(attempt, exc)
                attempt += 1
                usage.retries += 1
                await asyncio.sleep(delay)  # outside the semaphore: a backing-off call holds no slot

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
                replica = await self._pick_replica()
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
                        self._replica_failed(replica, exc)
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

    async def _pick_replica(self) -> Replica:
        """The least-loaded replica that is not cooling down (waiting if all are)."""
        if len(self.replicas) == 1:
            return self.replicas[0]
        while True:
            now = time.monotonic()
            healthy = [r for r in self.replicas if r.cooldown_until <= now]
            if healthy:
                return min(healthy, key=lambda r: (r.in_flight, r.served))
            await asyncio.sleep(min(r.cooldown_until for r in self.replicas) - now)

    def _healthy(self) -> bool:
        now = time.monotonic()
        return any(r.cooldown_until <= now for r in self.replicas)

    def _replica_failed(self, replica: Replica, exc: LLMError) -> None:
        if len(self.replicas) == 1 or not isinstance(exc, REPLICA_FAULTS):
            return
        replica.failures += 1
        replica.unreachable = replica.unreachable or isinstance(exc, UnreachableError)
        if replica.cooldown_until <= time.monotonic():
            progress.log(f"{self.name}: replica {replica.url} failed ({exc.kind}); no requests to it for "
                         f"{self.config.replica_cooldown_s:g} s")
        replica.cooldown_until = time.monotonic() + self.config.replica_cooldown_s
        exc.replica_fault = True

    def _estimate_tokens(self, call: ProviderCall) -> int:
        prompt = sum(self.provider.count_tokens(m["content"]) + 4 for m in call.messages)
        return prompt + call.params.max_tokens * call.n


class RoleClient:
    """What components hold: an endpoint seen through one role, so usage is booked per role."""

    def __init__(self, role: str, endpoint: Endpoint, usage: RoleUsage, on_call=None):
        self.role = role
        self.endpoint = endpoint
        self.usage = usage
        self._on_call = on_call

    @property
    def config(self) -> EndpointConfig:
        return self.endpoint.config

    @property
    def supports_logprobs(self) -> bool:
        """Whether ``chat(..., top_logprobs=k)`` returns token log-probabilities."""
        return self.endpoint.provider.supports_logprobs

    async def chat(self, messages: list[Message], *, n: int = 1, sample_index: int = 0, **overrides: Any) -> list[Completion]:
        try:
            comps = await self.endpoint.chat(messages, self.usage, n=n, sample_index=sample_index, **overrides)
        except EndpointFatalError as exc:
            raise exc.for_role(self.role) from None
        if self._on_call:
            self._on_call(self.role, self.usage)
        return comps

    async def text(self, messages: list[Message], *, sample_index: int = 0, **overrides: Any) -> str:
        return (await self.chat(messages, n=1, sample_index=sample_index, **overrides))[0].text

    def count_tokens(self, text: str) -> int:
        return self.endpoint.provider.count_tokens(text)


class LLMPool:
    """Endpoints by name, created on first use, one cache for all of them."""

    def __init__(self, config: MusicConfig, registry: Registry, cache_path: str | None, show_progress: bool = True):
        self.config = config
        self.registry = registry
        self.cache = CallCache(cache_path) if cache_path else None
        self.cache_path = cache_path
        self._journal: BatchJournal | None = None
        self._endpoints: dict[str, Endpoint] = {}
        self.usage: dict[str, RoleUsage] = defaultdict(RoleUsage)
        self._tasks: dict[str, progress.Task] = {}
        self._show = show_progress

    def endpoint(self, name: str) -> Endpoint:
        if name not in self._endpoints:
            ep_cfg = self.config.models[name]
            cls = self.registry.get("chat_provider", ep_cfg.provider)
            # Replicas: one provider per base_url; the first names the endpoint in the cache.
            replicas = [cls(dataclasses.replace(ep_cfg, base_url=url, base_urls=[])) for url in ep_cfg.base_urls]
            journal = self.journal() if ep_cfg.mode == "batch" else None
            self._endpoints[name] = Endpoint(name, ep_cfg, replicas[0] if replicas else cls(ep_cfg), self.cache,
                                             default_seed=self.config.run.seed, replicas=replicas or None,
                                             journal=journal)
        return self._endpoints[name]

    def journal(self) -> BatchJournal | None:
        """The batch-job journal, in the cache's SQLite file (tables of its own)."""
        if self._journal is None and self.cache_path:
            self._journal = BatchJournal(self.cache_path)
        return self._journal

    def batch_report(self) -> dict[str, Any]:
        """Per endpoint in batch mode: jobs and items this run; per replicated endpoint: load."""
        out: dict[str, Any] = {}
        for name, ep in self._endpoints.items():
            if ep.batch is not None:
                out.setdefault(name, {})["batch"] = ep.batch.stats.to_dict()
            if len(ep.replicas) > 1:
                out.setdefault(name, {})["replicas"] = [r.to_dict() for r in ep.replicas]
        return out

    def endpoint_name(self, role: str) -> str:
        from ..config.schema import role_endpoint

        return role_endpoint(self.config, role)

    def for_role(self, role: str) -> RoleClient:
        return RoleClient(role, self.endpoint(self.endpoint_name(role)), self.usage[role], self._progress)

    def preflight(self, roles: list[str]) -> None:
        """Check what can be checked without a call (a key variable that is not set), for
        every endpoint these roles use, before any work starts."""
        for role in roles:
            ep = self.endpoint(self.endpoint_name(role))
            try:
                ep.provider.check_credentials()
            except LLMError as exc:
                try:
                    ep._raise_fatal(exc)
                except EndpointFatalError as fatal:
                    raise fatal.for_role(role) from None

    def totals(self) -> dict[str, float]:
        """Wire calls, tokens and cost so far, over every role (for progress lines)."""
        us = list(self.usage.values())
        return {"calls": sum(u.wire_calls for u in us), "cached": sum(u.cached_samples for u in us),
                "tokens": sum(u.prompt_tokens + u.completion_tokens for u in us),
                "cost_usd": sum(u.cost_usd for u in us)}

    def _progress(self, role: str, usage: RoleUsage) -> None:
        if not self._show:
            return
        if role not in self._tasks:
            self._tasks[role] = progress.Task(f"llm:{role}", total=None)
        self._tasks[role].update(completed=usage.requests, info=(
            f"wire {usage.wire_calls} · cached {usage.cached_samples} · "
            f"{usage.prompt_tokens + usage.completion_tokens} tok · ${usage.cost_usd:.4f}"))

    def usage_report(self) -> dict[str, dict[str, Any]]:
        return {role: u.to_dict() for role, u in sorted(self.usage.items())}

    async def aclose(self) -> None:
        for ep in self._endpoints.values():
            if ep.batch is not None:
                await ep.batch.aclose()
            for r in ep.replicas:
                await r.provider.aclose()
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        for t in self._tasks.values():
            t.close()
        self._tasks.clear()
        if self.cache is not None:
            self.cache.close()
            self.cache = None
