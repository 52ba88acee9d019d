"""Running many coroutines where one failure must stop them all (an endpoint's fatal error, a
bug): wait for all or for the first failure, raise it, and never leave a task behind."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any


async def until_first_failure(tasks: Sequence[asyncio.Future[Any]]) -> None:
    """Wait for every task, or for the first to fail; raise that failure."""
    if tasks:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    for t in tasks:
        if t.done() and not t.cancelled() and t.exception() is not None:
            raise t.exception()  # type: ignore[misc]


async def cancel_all(tasks: Sequence[asyncio.Future[Any]]) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
