"""The ``music inspect`` command: find the pairs, the audit and the labels file, load any reward
models asked for, and serve the page on 127.0.0.1 until interrupted."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import click

from music_core.cli import config_options


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def locate(run_dir: str | None, pairs: str | None, cfg: Any) -> tuple[Path, Path | None]:
    """(pairs file, audit records or None): a file as given, or a run's pairs and audit where its
    config puts them (``RunPaths``)."""
    from music_core.errors import MusicError
    from music_core.paths import RunPaths, audit_beside

    if pairs:
        path = Path(pairs)
        if not path.exists():
            raise MusicError(f"pairs file not found: {path}")
        audit = audit_beside(path)
        return path, audit if audit.exists() else None
    if run_dir:
        cfg.run.output_dir = run_dir
    paths = RunPaths(cfg)
    path = paths.synth_output
    if not path.exists():
        raise MusicError(f"no pairs at {path}: give a run folder (`music inspect runs/NAME`) or a file (--pairs FILE)")
    audit = paths.audit_file("audit")
    return path, audit if audit.exists() else None


@click.command()
@click.argument("run_dir", required=False)
@click.option("--pairs", "pairs_file", default=None, metavar="FILE", help="any preference file the readers accept")
@click.option("--port", default=0, type=int, help="port (default: a free one)")
@click.option("--host", default="127.0.0.1", help="address to serve on; anything but 127.0.0.1 shares the pairs")
@click.option("--rm", "rms", multiple=True, metavar="NAME=PATH", help="show this reward model's rewards (repeatable)")
@click.option("--seed", default=0, type=int, help="seed of the blind order of each pair")
@config_options
def inspect(run_dir, pairs_file, port, host, rms, seed, config_path, overrides):
    """Serve a page over a run's pairs: side by side, turn-aligned, blind labelling into labels.jsonl."""
    import uvicorn

    from music_core.audit.labels import LabelLog
    from music_core.cli import load_cli_config
    from music_core.paths import labels_beside
    from music_core.records import RecordPolicy

    from .app import build_app
    from .scores import RewardView
    from .store import PairStore

    cfg = load_cli_config(config_path, overrides)
    path, audit = locate(run_dir, pairs_file, cfg)
    store = PairStore(path, audit, RecordPolicy.of(cfg))
    labels = LabelLog(labels_beside(path))
    for w in labels.warnings:
        click.echo(f"warning: {w}", err=True)
    scorers = {}
    if rms:
        from music_core.context import RunContext
        from music_core.evaluation import load_scorer

        ctx = RunContext(cfg)
        for spec in rms:
            name, _, folder = spec.partition("=")
            scorers[name] = load_scorer(ctx, folder)
    app = build_app(store, labels, RewardView(scorers, store), seed)
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: serving on {host}: anyone who can reach it can read the pairs and write labels", err=True)
    port = port or free_port(host)
    click.echo(f"music inspect: http://{host}:{port}/  ({store.count} pairs from {path}; labels -> {labels.path})",
               err=False)
    uvicorn.run(app, host=host, port=port, log_level="warning")
