"""``music run``: synth -> mix -> train a baseline RM (original data only) and a MUSIC RM (the
mix) -> evaluate both -> one report. Each step leaves a marker holding the hash of everything
it depended on; a rerun skips finished steps whose inputs did not change and resumes the
others (synthesis and training resume on their own). The stages themselves are in
:mod:`music_core.stages`."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from . import progress
from .jsonl import write_text_atomic
from .stages import STAGES, stage_hashes


def _done(ctx: Any, step: str, h: str) -> bool:
    marker = ctx.paths.stage_marker(step)
    return marker.exists() and json.loads(marker.read_text()).get("hash") == h


def _mark(ctx: Any, step: str, h: str, summary: dict[str, Any], seconds: float) -> None:
    write_text_atomic(ctx.paths.stage_marker(step),
                      json.dumps({"hash": h, "seconds": round(seconds, 1), "summary": summary}, indent=2, default=str) + "\n")


def run_pipeline(ctx: Any) -> dict[str, Any]:
    if ctx.config.run.dry_run:
        from .plan import print_plan

        print_plan(ctx)
        return {}
    hashes = stage_hashes(ctx)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    for name in ctx.config.run.stages:
        stage = STAGES[name]
        for step in stage.steps(ctx):
            if stage.skip_reason(ctx, step):  # e.g. no benchmark data configured
                continue
            if _done(ctx, step, hashes[step]):
                progress.log(f"[{step}] done earlier with the same inputs; skipping")
                continue
            progress.log(f"[{step}] running")
            t0 = time.perf_counter()
            summary = stage.run(ctx, step)
            timings[step] = time.perf_counter() - t0
            _mark(ctx, step, hashes[step], summary or {}, timings[step])
            progress.log(f"[{step}] finished in {timings[step]:.0f} s")
    progress.stop()
    from .report import write_report

    md, js = write_report(ctx, time.perf_counter() - t_all)
    click.echo(f"report: {md}\nresults: {js}")
    return {"report": str(md), "results": str(js), "timings": timings}
