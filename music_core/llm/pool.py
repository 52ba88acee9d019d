"""What components hold, and who makes it: :class:`LLMPool` creates each named endpoint on first
use (its replicas, its batch journal, one cache for all) and hands out :class:`RoleClient` objects,
each an endpoint seen through one role, so that usage is booked per role.

The top of the execution layer: it reads the run's config and registry, the rooms below it
(:mod:`.endpoint`, :mod:`.wire`, :mod:`.replicas`) do not.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from .. import progress
from ..data import Message
from .batch import BatchJournal
from .cache import CallCache
from .endpoint import Endpoint
from .errors import EndpointFatalError, LLMError
from .types import Completion
from .usage import RoleUsage

if TYPE_CHECKING:
    from ..config.schema import EndpointConfig, MusicConfig
    from ..registry import Registry


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
                    ep.raise_fatal(exc)
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
