"""``music run``: synth -> mix -> train a baseline RM (original data only) and a MUSIC RM (the
mix) -> evaluate both -> one report. Each step leaves a marker holding the hash of everything
it depended on; a rerun skips finished steps whose inputs did not change and resumes the
others (synthesis and training resume on their own). The stages themselves are in
:mod:`music_core.stages`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from . import progress
from .jsonl import write_text_atomic
from .stages import Stage, stage_hashes
from .steps import shared_step

if TYPE_CHECKING:
    from .context import RunContext


def _done(ctx: RunContext, step: str, h: str) -> bool:
    marker = ctx.paths.stage_marker(step)
    return marker.exists() and json.loads(marker.read_text()).get("hash") == h


def _mark(ctx: RunContext, step: str, h: str, summary: dict[str, Any], seconds: float) -> None:
    write_text_atomic(ctx.paths.stage_marker(step),
                      json.dumps({"hash": h, "seconds": round(seconds, 1), "summary": summary}, indent=2, default=str) + "\n")


def _run_step(ctx: RunContext, stage: Stage, step: str, h: str) -> float:
    """Make one step (or, in a sweep, link the one another variant made with the same inputs)."""
    shared = ctx.config.run.shared_dir
    local = stage.output_dir(ctx, step) if shared else None
    if shared is None or local is None:
        return _make(ctx, stage, step, h)
    with shared_step(Path(shared), step, h, local) as claim:
        if claim.made is not None:
            _mark(ctx, step, h, claim.made.get("summary") or {}, 0.0)
            progress.log(f"[{step}] made by another run of the sweep with the same inputs; linked")
            return 0.0
        seconds = _make(ctx, stage, step, h)
        claim.finish(json.loads(ctx.paths.stage_marker(step).read_text()))
        return seconds


def _make(ctx: RunContext, stage: Stage, step: str, h: str) -> float:
    progress.log(f"[{step}] running")
    t0 = time.perf_counter()
    summary = stage.run(ctx, step)
    seconds = time.perf_counter() - t0
    _mark(ctx, step, h, summary or {}, seconds)
    progress.log(f"[{step}] finished in {seconds:.0f} s")
    return seconds


def run_pipeline(ctx: RunContext) -> dict[str, Any]:
    if ctx.config.run.dry_run:
        from .plan import print_plan

        print_plan(ctx)
        return {}
    from .preflight import check, planned_steps

    hashes = stage_hashes(ctx)
    todo = planned_steps(ctx)  # less the steps with nothing to do (an evaluator without data)
    if ctx.config.run.preflight:  # what a later stage would fail on, before the first call is paid for
        check(ctx, [step for _, step in todo if not _done(ctx, step, hashes[step])])
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    for stage, step in todo:
        if _done(ctx, step, hashes[step]):
            progress.log(f"[{step}] done earlier with the same inputs; skipping")
            continue
        timings[step] = _run_step(ctx, stage, step, hashes[step])
    progress.stop()
    from .report import write_report

    md, js = write_report(ctx, time.perf_counter() - t_all)
    click.echo(f"report: {md}\nresults: {js}")
    return {"report": str(md), "results": str(js), "timings": timings}
