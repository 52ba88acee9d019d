"""Helpers shared by the pipeline commands."""

from __future__ import annotations

from typing import Any

import click


def context(config_path: str | None, overrides: tuple[str, ...], extra: list[str] | None = None,
            evaluators: tuple[str, ...] = ()):
    from music_core import progress
    from music_core.cli import load_cli_config
    from music_core.context import RunContext

    cfg = load_cli_config(config_path, tuple(overrides) + tuple(extra or ()), evaluators)
    progress.enable(cfg.run.progress, cfg.run.progress_interval_s)
    return RunContext(cfg)


def echo_kv(title: str, items: dict[str, Any]) -> None:
    click.echo(title)
    for k, v in items.items():
        click.echo(f"  {k}: {v}")
