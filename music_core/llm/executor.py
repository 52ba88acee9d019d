"""The one execution layer under every provider: per-endpoint concurrency caps, sliding-window
request and token limits, retries with exponential backoff and jitter that honour Retry-After
(on retryable errors only), a content-addressed cache with in-flight de-duplication, and usage
and cost accounting per role.

Each room is a module of its own; this one names the whole and re-exports what the rest of the
code imports from it, so ``music_core.llm.executor`` stays the import path:

- :mod:`.usage`: what each role spent (:class:`RoleUsage`);
- :mod:`.endpoint`: one named endpoint: sampling parameters, the cache and in-flight
  de-duplication, retries with backoff (:class:`Endpoint`, ``MAX_BACKOFF_S``);
- :mod:`.fatality`: when an error is the endpoint's and stops the run;
- :mod:`.replicas`: the servers behind an endpoint, their load and cool-down (:class:`Replica`);
- :mod:`.wire`: one call, rate-limited or through the vendor's batch API (``MINUTE_S``, the
  rate window: patch it there, ``music_core.llm.wire.MINUTE_S``, to shrink it in a test);
- :mod:`.pool`: endpoints by name and the per-role clients components hold (:class:`LLMPool`,
  :class:`RoleClient`).
"""

from __future__ import annotations

from .endpoint import MAX_BACKOFF_S, Endpoint
from .pool import LLMPool, RoleClient
from .replicas import REPLICA_FAULTS, Replica
from .usage import RoleUsage
from .wire import MINUTE_S

__all__ = ["MAX_BACKOFF_S", "MINUTE_S", "REPLICA_FAULTS", "Endpoint", "LLMPool", "Replica", "RoleClient",
           "RoleUsage"]
