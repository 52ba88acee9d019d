"""The sweep's work: resolve and check every variant before anything runs, plan what is shared,
launch the variants that are not finished, and compare them.

Layout: ``runs/<sweep>/<variant>/`` (a whole ``music run``), ``runs/<sweep>/shared/<step>/<hash>/``
(the steps variants share, linked from their folders), one ``llm-cache.sqlite`` for the whole
sweep, ``sweep.json`` (the variants), ``report.md``, ``report.json``, ``report.csv``, ``plots/``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..config import load_config
from ..contracts import VariantJob
from ..errors import ConfigError, MusicError
from ..jsonl import write_text_atomic
from .grid import Variant, build_variants, split_overrides

if TYPE_CHECKING:
    from ..config.schema import MusicConfig, SweepConfig

RUN_KEYS = ("output_dir", "cache", "shared_dir", "dry_run")


class SweepFailed(MusicError):
    exit_code = 1


@dataclasses.dataclass
class Sweep:
    name: str
    root: Path
    config_path: str | None
    base: list[str]
    variants: list[Variant]
    reference: str
    section: SweepConfig

    def run_args(self, v: Variant, cfg: MusicConfig) -> list[str]:
        """Everything that makes a variant's ``music run``: its overrides and the sweep's folders."""
        extra = [f"run.output_dir={self.root / v.name}", f"run.cache={self.root / 'llm-cache.sqlite'}",
                 f"run.shared_dir={self.root / 'shared'}"]
        if hasattr(cfg.train, "run_name"):  # the trackers' run and group, where the trainer has them
            extra += [f"train.run_name={v.name}", f"train.tracker_group={self.name}"]
        return self.base + v.argv() + extra

    def job(self, v: Variant, cfg: MusicConfig) -> VariantJob:
        argv = [sys.executable, "-m", "music_core", "run"]
        argv += ["--config", self.config_path] if self.config_path else []
        return VariantJob(v.name, argv + self.run_args(v, cfg), os.getcwd(),
                          {**os.environ, "PYTHONUNBUFFERED": "1"}, str(self.root / v.name / "run.log"))


def resolve(config_path: str | None, overrides: tuple[str, ...], reference: str | None,
            name: str | None) -> tuple[Sweep, dict[str, MusicConfig]]:
    """Every variant's config, loaded and checked now: a bad key or value names the variant."""
    base, axes = split_overrides(overrides)
    base_cfg = load_config(config_path, base)
    section = base_cfg.sweep
    variants = build_variants(section, axes)
    swept = sorted({k for v in variants for k in v.overrides})
    sweep_name = name or section.name or "sweep-" + "-".join(k.split(".")[-1] for k in swept)
    root = Path(section.output_dir or Path("runs") / sweep_name)
    sweep = Sweep(sweep_name, root, config_path, base, variants, "", section)
    configs: dict[str, MusicConfig] = {}
    seen: dict[str, Variant] = {}
    kept: list[Variant] = []
    for v in variants:
        try:
            cfg = load_config(config_path, base + v.argv())
        except ConfigError as exc:
            raise ConfigError(f"sweep variant {v.name!r}: {exc}") from None
        key = json.dumps(_comparable(cfg), sort_keys=True, default=str)
        if key in seen:  # two spellings of one config: run once
            seen[key].duplicates.append(v.name)
            continue
        seen[key] = v
        kept.append(v)
        configs[v.name] = cfg
    sweep.variants = kept
    names = [v.name for v in kept]
    ref = reference or section.reference or names[0]
    if ref not in names:
        raise ConfigError(f"sweep reference {ref!r} is not a variant (variants: {names})")
    sweep.reference = ref
    return sweep, configs


def _comparable(cfg: MusicConfig) -> Any:
    data = dataclasses.asdict(cfg)
    for k in RUN_KEYS:
        data["run"].pop(k, None)
    data.pop("sweep", None)
    return data


def variant_context(sweep: Sweep, v: Variant) -> Any:
    from ..context import RunContext

    cfg = load_config(sweep.config_path, sweep.run_args(v, load_config(sweep.config_path, sweep.base + v.argv())))
    return RunContext(cfg)


def plan(sweep: Sweep) -> None:
    """Every variant, which of its steps it shares, its calls and price; and the sweep's total."""
    from ..plan import print_cost, tally
    from ..stages import STAGES, stage_hashes

    click.echo(f"music sweep plan (dry run: nothing is called) -> {sweep.root}: {len(sweep.variants)} variants, "
               f"reference {sweep.reference}")
    made: dict[tuple[str, str], str] = {}
    total = online = 0.0
    for v in sweep.variants:
        ctx = variant_context(sweep, v)
        hashes = stage_hashes(ctx)
        shared = {step: made[(step, h)] for step, h in hashes.items() if (step, h) in made}
        for step, h in hashes.items():
            made.setdefault((step, h), v.name)
        dup = f" (also: {', '.join(v.duplicates)}, the same config)" if v.duplicates else ""
        click.echo(f"\n  {v.name}{dup}")
        click.echo("    makes: " + (", ".join(s for s in hashes if s not in shared) or "nothing new"))
        if shared:
            click.echo("    shares: " + ", ".join(f"{s} (with {w})" for s, w in shared.items()))
        new_stages = {name for name, st in STAGES.items() if any(s in hashes and s not in shared for s in st.steps(ctx))}
        c = ctx.config
        stages = [s for s in c.run.stages if s in new_stages]

        def fill(cx: Any, add: Any, stages: list[str] = stages) -> None:
            from ..plan import _run_calls

            saved = list(cx.config.run.stages)
            cx.config.run.stages = stages  # only the stages this variant makes itself cost anything
            try:
                _run_calls(cx, add)
            finally:
                cx.config.run.stages = saved

        rows = tally(ctx, fill)
        calls = sum(r["calls"] for r in rows.values())
        cost = cost_online = 0.0
        from ..config.load import role_endpoint

        for role, r in rows.items():
            ep = c.models[role_endpoint(c, role)]
            cost_online += ep.cost_usd(r["prompt_tokens"], r["completion_tokens"])
            cost += ep.cost_usd(r["prompt_tokens"], r["completion_tokens"], batch=ep.mode == "batch")
        click.echo(f"    LLM calls {calls:.0f}, estimated ${cost:.2f}")
        total, online = total + cost, online + cost_online
    print_cost(total, online)


def finished(sweep: Sweep, v: Variant) -> bool:
    """A variant whose every step is done with its current inputs (its record says so)."""
    from ..stages import stage_hashes

    record = sweep.root / v.name / "sweep-done.json"
    if not record.exists():
        return False
    return json.loads(record.read_text()).get("hashes") == stage_hashes(variant_context(sweep, v))


def run_sweep(config_path: str | None, overrides: tuple[str, ...], *, reference: str | None = None,
              dry_run: bool = False, launcher: str | None = None, jobs: int | None = None,
              name: str | None = None) -> dict[str, Any]:
    from ..plugins import get_registry
    from ..stages import stage_hashes
    from .compare import write_comparison

    sweep, configs = resolve(config_path, overrides, reference, name)
    if dry_run:
        plan(sweep)
        return {}
    section = sweep.section
    sweep.root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(sweep.root / "sweep.json", json.dumps(
        {"name": sweep.name, "config": config_path, "base_overrides": sweep.base, "reference": sweep.reference,
         "variants": [dataclasses.asdict(v) for v in sweep.variants]}, indent=2) + "\n")
    todo = [v for v in sweep.variants if not finished(sweep, v)]
    for v in sweep.variants:
        if v not in todo:
            click.echo(f"[sweep] {v.name}: finished earlier with the same inputs")
    if todo:
        name_ = launcher or section.launcher
        launch = get_registry().create("launcher", name_, dict(section.launcher_options), None)
        jobs_ = [sweep.job(v, configs[v.name]) for v in todo]
        for j in jobs_:
            Path(j.log).parent.mkdir(parents=True, exist_ok=True)
        click.echo(f"[sweep] launching {len(jobs_)} variants with {name_!r} ({jobs or section.jobs} at a time); "
                   f"logs in each variant's run.log")
        codes = launch.launch(jobs_, jobs or section.jobs)
    else:
        codes = []
    failed = []
    for v, code in zip(todo, codes):
        if code == 0:
            write_text_atomic(sweep.root / v.name / "sweep-done.json", json.dumps(
                {"hashes": stage_hashes(variant_context(sweep, v))}, indent=2) + "\n")
        else:
            failed.append((v.name, code))
    md, js = write_comparison(sweep, get_registry())  # each evaluator names its own headline metrics
    click.echo(f"report: {md}\nresults: {js}")
    if failed:
        raise SweepFailed("sweep: " + "; ".join(f"variant {n} exited {c} (log: {sweep.root / n / 'run.log'})"
                                                for n, c in failed)
                          + f". Finished variants are kept and compared in {md}; rerun the same command to make the rest.")
    return {"report": str(md), "results": str(js)}
