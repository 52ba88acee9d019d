"""Helpers shared by the pipeline commands."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

T = TypeVar("T")


def context(config_path: str | None, overrides: tuple[str, ...], extra: list[str] | None = None):
    from music_core import progress
    from music_core.cli import load_cli_config
    from music_core.context import RunContext

    cfg = load_cli_config(config_path, tuple(overrides) + tuple(extra or ()))
    progress.enable(cfg.run.progress)
    return RunContext(cfg)


def run_async(ctx: Any, work: Callable[[], Awaitable[T]]) -> T:
    """Run a stage's coroutine and always release endpoints, threads and the cache."""
    from music_core import progress

    async def main() -> T:
        try:
            return await work()
        finally:
            await ctx.aclose()

    try:
        return asyncio.run(main())
    finally:
        progress.stop()


def echo_kv(title: str, items: dict[str, Any]) -> None:
    click.echo(title)
    for k, v in items.items():
        click.echo(f"  {k}: {v}")
