"""``music run``: synth -> mix -> train a baseline RM (original data only) and a MUSIC RM (the
mix) -> evaluate both -> one report. Each stage leaves a marker holding the hash of everything
it depended on; a rerun skips finished stages whose inputs did not change and resumes the
others (synthesis and training resume on their own)."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from . import progress
from .data import content_hash
from .jsonl import write_text_atomic

RMS = {"baseline": "original_train.jsonl", "music": "train.jsonl"}


def _section(cfg: Any) -> Any:
    """Plain JSON-able data from config dataclasses (and dicts of them), for hashing."""
    import dataclasses

    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return dataclasses.asdict(cfg)
    if isinstance(cfg, dict):
        return {k: _section(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [_section(v) for v in cfg]
    return cfg


def stage_hashes(ctx: Any) -> dict[str, str]:
    """Each stage's inputs, chained: a change upstream invalidates everything downstream."""
    from .synth.runner import fingerprint

    c = ctx.config
    h = {"synth": content_hash("synth", fingerprint(ctx), _section(c.seeds))}
    h["mix"] = content_hash("mix", h["synth"], _section(c.mix))
    train = {k: v for k, v in _section(c.train).items() if k not in ("log_every", "trackers")}
    for rm in RMS:
        h[f"train-{rm}"] = content_hash("train", rm, h["mix"], train)
    evals = _section(c.eval)
    for name in c.eval.evaluators:
        h[f"eval-{name}"] = content_hash("eval", name, h["train-baseline"], h["train-music"], evals,
                                         _section(c.models), _section(c.roles))
    return h


def _done(ctx: Any, step: str, h: str) -> bool:
    marker = ctx.output_dir / "stages" / f"{step}.json"
    return marker.exists() and json.loads(marker.read_text()).get("hash") == h


def _mark(ctx: Any, step: str, h: str, summary: dict[str, Any], seconds: float) -> None:
    write_text_atomic(ctx.output_dir / "stages" / f"{step}.json",
                      json.dumps({"hash": h, "seconds": round(seconds, 1), "summary": summary}, indent=2, default=str) + "\n")


def run_pipeline(ctx: Any) -> dict[str, Any]:
    if ctx.config.run.dry_run:
        from .plan import print_plan

        print_plan(ctx)
        return {}
    hashes = stage_hashes(ctx)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    for stage in ctx.config.run.stages:
        for step, work in _steps(ctx, stage):
            if _done(ctx, step, hashes[step]):
                progress.log(f"[{step}] done earlier with the same inputs; skipping")
                continue
            progress.log(f"[{step}] running")
            t0 = time.perf_counter()
            summary = work()
            timings[step] = time.perf_counter() - t0
            _mark(ctx, step, hashes[step], summary or {}, timings[step])
            progress.log(f"[{step}] finished in {timings[step]:.0f} s")
    progress.stop()
    from .report import write_report

    md, js = write_report(ctx, time.perf_counter() - t_all)
    click.echo(f"report: {md}\nresults: {js}")
    return {"report": str(md), "results": str(js), "timings": timings}


def _steps(ctx: Any, stage: str):
    if stage == "synth":
        yield "synth", lambda: _synth(ctx)
    elif stage == "mix":
        from .mix import run_mix

        yield "mix", lambda: run_mix(ctx)
    elif stage == "train":
        for rm, data in RMS.items():
            yield f"train-{rm}", (lambda rm=rm, data=data: _train(ctx, rm, data))
    elif stage == "eval":
        for name in ctx.config.eval.evaluators:
            if _skip_reason(ctx, name):  # e.g. no benchmark data configured
                continue
            yield f"eval-{name}", (lambda name=name: _eval(ctx, name))


def _synth(ctx: Any) -> dict[str, Any]:
    from .synth.runner import run_synth

    return {k: v for k, v in run_synth(ctx).items() if k != "usage"}


def _train(ctx: Any, rm: str, data: str) -> dict[str, Any]:
    from .training_stage import train_reward_model

    result = train_reward_model(ctx, name=rm, train_data=str(ctx.mix_dir() / data))
    return {k: v for k, v in result.metrics.items() if not isinstance(v, dict)}


def _eval(ctx: Any, name: str) -> dict[str, Any]:
    from .evaluation import run_evaluator

    rms = {rm: str(ctx.rm_dir(rm)) for rm in RMS}
    out = run_evaluator(ctx, name, rms)
    return {"results": out["results_path"], "report": out["markdown_path"]}


def _skip_reason(ctx: Any, name: str) -> str | None:
    """The evaluator's own reason to be passed over; an unregistered one runs (and says so)."""
    try:
        cls = ctx.registry.get("evaluator", name)
    except Exception:
        return None
    return cls.skip_reason(getattr(ctx.config.eval, cls.section_name(), None))
