"""The servers behind one endpoint (``base_urls``): their load and health, which one takes the
next call, and which failures cool one down so that the call goes to another at once.

Kept apart from the endpoint because it is a policy of its own (least-loaded, cool-down after a
server's fault) that reads only the replicas, never the request.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from .. import progress
from .errors import LLMConnectionError, LLMError, LLMTimeoutError, ServerError, UnreachableError
from .provider import ChatProvider

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


async def pick_replica(replicas: list[Replica]) -> Replica:
    """The least-loaded replica that is not cooling down (waiting if all are)."""
    if len(replicas) == 1:
        return replicas[0]
    while True:
        now = time.monotonic()
        healthy = [r for r in replicas if r.cooldown_until <= now]
        if healthy:
            return min(healthy, key=lambda r: (r.in_flight, r.served))
        await asyncio.sleep(min(r.cooldown_until for r in replicas) - now)


def any_healthy(replicas: list[Replica]) -> bool:
    """Whether a replica is not cooling down now (a retry can go to it without backing off)."""
    now = time.monotonic()
    return any(r.cooldown_until <= now for r in replicas)


def replica_failed(endpoint: str, replicas: list[Replica], replica: Replica, exc: LLMError,
                   cooldown_s: float) -> None:
    """Book a failed call: a server's fault (:data:`REPLICA_FAULTS`) with several replicas cools
    this one down for ``cooldown_s`` and marks the error a replica's fault."""
    if len(replicas) == 1 or not isinstance(exc, REPLICA_FAULTS):
        return
    replica.failures += 1
    replica.unreachable = replica.unreachable or isinstance(exc, UnreachableError)
    if replica.cooldown_until <= time.monotonic():
        progress.log(f"{endpoint}: replica {replica.url} failed ({exc.kind}); no requests to it for "
                     f"{cooldown_s:g} s")
    replica.cooldown_until = time.monotonic() + cooldown_s
    exc.replica_fault = True
