"""The five stages of ``music run``, each in one shape: its steps, the hash of each step's inputs
(chained, so a change upstream invalidates everything downstream), its line of the dry-run
plan, the work, and its section of the run report. Where each stage writes is
:class:`~music_core.paths.RunPaths`' business; what each does is its own module's (``synth``,
``audit``, ``mix``, ``training_stage``, ``evaluation``)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .data import content_hash
from .paths import RUN_RMS
from .records import describe_read

if TYPE_CHECKING:
    from .config.schema import TrainConfig
    from .context import RunContext


def plain(cfg: Any) -> Any:
    """Plain JSON-able data from config dataclasses (and dicts of them), for hashing."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return dataclasses.asdict(cfg)
    if isinstance(cfg, dict):
        return {k: plain(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [plain(v) for v in cfg]
    return cfg


def load_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


class Stage(ABC):
    name: ClassVar[str]
    report_key: ClassVar[str]  # its section of report.json

    def steps(self, ctx: RunContext) -> list[str]:
        return [self.name]

    def skip_reason(self, ctx: RunContext, step: str) -> str | None:
        """Why a step is passed over in this run (None: it runs)."""
        return None

    def output_dir(self, ctx: RunContext, step: str) -> Path | None:
        """The folder that holds everything the step writes, which a sweep links into the shared
        store of steps (:mod:`music_core.steps`); None: the step cannot be shared (its output was
        moved out of the run's folder by the stage's own ``output_dir`` key)."""
        return None

    @abstractmethod
    def inputs_hash(self, ctx: RunContext, step: str, upstream: dict[str, str]) -> str:
        """The hash of everything the step depends on; ``upstream`` holds the earlier steps'."""

    @abstractmethod
    def plan(self, ctx: RunContext) -> str:
        """One line of ``--dry-run``: what the stage would do, calling nothing."""

    @abstractmethod
    def run(self, ctx: RunContext, step: str) -> dict[str, Any]:
        """Do the step; return a small JSON-able summary (kept in its stage marker)."""

    @abstractmethod
    def report(self, ctx: RunContext) -> tuple[Any, list[str]]:
        """Its section of the run report: JSON data (None: nothing yet) and Markdown lines."""


class SynthStage(Stage):
    name, report_key = "synth", "synth"

    def output_dir(self, ctx: RunContext, step: str) -> Path | None:
        return None if ctx.config.synth.output else ctx.paths.synth_output.parent

    def inputs_hash(self, ctx: RunContext, step: str, upstream: dict[str, str]) -> str:
        from .synth.runner import fingerprint

        return content_hash("synth", fingerprint(ctx), plain(ctx.config.seeds))

    def plan(self, ctx: RunContext) -> str:
        from .config import resolve_prompt_profile

        c = ctx.config
        profile, why = resolve_prompt_profile(c)
        return (f"synth: {c.seeds.limit or 'all'} seeds from {c.seeds.source}{' ' + c.seeds.path if c.seeds.path else ''}, "
                f"T={c.synth.turns}, strategy {c.synth.strategy} (fallback {c.synth.fallback_strategy}), filter "
                f"{c.synth.filter}, prompt profile {profile} ({why})")

    def run(self, ctx: RunContext, step: str) -> dict[str, Any]:
        from .synth.runner import run_synth

        return {k: v for k, v in run_synth(ctx).items() if k != "usage"}

    def report(self, ctx: RunContext) -> tuple[Any, list[str]]:
        synth = load_json(ctx.paths.synth_side("report"))
        if not synth:
            return None, []
        return synth, ["## Synthesis", "",
                       f"{synth['pairs']} MUSIC pairs ({synth['errors']} error rows, {synth['filtered']} filtered out), "
                       f"{synth['mean_turns']} turns per pair on average; prompt profile "
                       f"**{synth.get('prompt_profile')}**; user simulator turns usable on the first try "
                       f"{synth['user_simulator']['accepted_first_try']:.0%}; contrast turns made by the fallback "
                       f"strategy {synth['contrast']['fallbacks']} of {synth['contrast']['turns']} "
                       f"({synth.get('fallback_turn_share', 0):.0%}). LLM cost of the last synthesis run "
                       f"${synth.get('cost_usd_this_run', 0.0):.2f}{_batch_note(synth)}. "
                       f"Details: `{ctx.paths.synth_side('report-md')}`.", ""]


class AuditStage(Stage):
    """An independent judge of every synthetic pair (:mod:`music_core.audit`)."""

    name, report_key = "audit", "audit"

    def output_dir(self, ctx: RunContext, step: str) -> Path | None:
        return None if ctx.config.audit.output_dir else ctx.paths.audit_dir

    def inputs_hash(self, ctx: RunContext, step: str, upstream: dict[str, str]) -> str:
        from .config.load import role_endpoint

        c = ctx.config
        return content_hash("audit", upstream["synth"], plain(c.audit), plain(c.models[role_endpoint(c, "auditor")]),
                            plain(c.mix.original))

    def plan(self, ctx: RunContext) -> str:
        from .audit.plan import describe

        return describe(ctx)

    def run(self, ctx: RunContext, step: str) -> dict[str, Any]:
        from .audit import run_audit

        return run_audit(ctx)

    def report(self, ctx: RunContext) -> tuple[Any, list[str]]:
        audit = load_json(ctx.paths.audit_file("report"))
        if not audit:
            return None, []
        md = ctx.paths.audit_file("report-md").read_text() if ctx.paths.audit_file("report-md").exists() else ""
        return audit, [md.rstrip(), f"Details: `{ctx.paths.audit_file('report-md')}`, one record a pair in "
                                    f"`{ctx.paths.audit_file('audit')}`.", ""]


def validity_line(ctx: RunContext) -> str | None:
    """The audit's headline, to stand beside the reward models trained on the pairs."""
    audit = load_json(ctx.paths.audit_file("report"))
    if not audit or audit["validity"]["rate"] is None:
        return None
    v = audit["validity"]
    lo, hi = v["ci95"]
    cal = audit["calibration"]
    known = (f"the auditor's accuracy on known pairs {cal['accuracy']['rate']:.0%}"
             + ("" if cal.get("tells_apart") else ", **not able to tell them apart**")) if "accuracy" in cal \
        else "auditor not calibrated"
    return (f"The MUSIC RM's synthetic pairs: audited validity {v['rate']:.0%} [{lo:.0%}, {hi:.0%}] on {v['n']} pairs "
            f"({known}).")


# Train keys that change what is logged, never what is trained.
TRACKING_KEYS = ("log_every", "trackers", "run_name", "tracker_project", "tracker_group")


def original_data_hash(ctx: RunContext, upstream: dict[str, str]) -> str:
    """What the baseline's data (``original_train``) depends on: the original source and the
    split, but not the synthetic pairs, unless a ratio ties its size to theirs."""
    m = ctx.config.mix
    tied = m.synthetic_ratio is not None
    return content_hash("mix-original", plain(m.original), m.original_count, m.eval_fraction, m.dedupe, m.seed,
                        m.synthetic_ratio, upstream.get("mix") if tied else None)


class MixStage(Stage):
    name, report_key = "mix", "mix"

    def output_dir(self, ctx: RunContext, step: str) -> Path | None:
        return None if ctx.config.mix.output_dir else ctx.paths.mix_dir

    def inputs_hash(self, ctx: RunContext, step: str, upstream: dict[str, str]) -> str:
        # the mix reads the audit only when it acts on it
        acts = ctx.config.mix.audit.min_p is not None
        return content_hash("mix", upstream["synth"], plain(ctx.config.mix), upstream.get("audit") if acts else None)

    def plan(self, ctx: RunContext) -> str:
        m = ctx.config.mix
        return (f"mix: synthetic {m.synthetic_count or 'all'} + original {m.original_count or 'all'} from "
                f"{m.original.source}{' ' + m.original.path if m.original.path else ''}, eval fraction {m.eval_fraction}")

    def run(self, ctx: RunContext, step: str) -> dict[str, Any]:
        from .mix import run_mix

        return run_mix(ctx)

    def report(self, ctx: RunContext) -> tuple[Any, list[str]]:
        mix = load_json(ctx.paths.mix_file("summary"))
        if not mix:
            return None, []
        audit = mix.get("audit")
        acted = (f" The audit dropped {audit['dropped']} synthetic pairs below P(chosen better) {audit['min_p']} "
                 f"({audit['dropped_unreadable']} of them unreadable), kept {audit['kept']}." if audit else "")
        read = [f"- {what} data: {describe_read(r)}" for what, r in (mix.get("records") or {}).items()
                if isinstance(r, dict) and "read" in r]
        return mix, ["## Data mix", "", f"train {mix['train']}, eval {mix['eval']} (synthetic share of train "
                                        f"{mix['synthetic_share_of_train']:.0%}).{acted}", "", *read,
                     *([""] if read else [])]


def describe_trainer(ctx: RunContext, train: TrainConfig) -> str:
    """The selected trainer's own one-line description of what it will train."""
    cls = ctx.registry.find("trainer", train.trainer)
    if cls is None:  # not registered: training will say so; the plan still prints
        return f"{train.trainer} (not registered)"
    return str(cls.describe(train))


class TrainStage(Stage):
    """Two reward models: ``baseline`` on the original data alone, ``music`` on the mix."""

    name, report_key = "train", "reward_models"

    def steps(self, ctx: RunContext) -> list[str]:
        return [f"train-{rm}" for rm in RUN_RMS]

    def output_dir(self, ctx: RunContext, step: str) -> Path | None:
        return ctx.paths.rm_dir(step.removeprefix("train-"))

    def inputs_hash(self, ctx: RunContext, step: str, upstream: dict[str, str]) -> str:
        train = {k: v for k, v in plain(ctx.config.train).items() if k not in TRACKING_KEYS}
        rm = step.removeprefix("train-")
        data = original_data_hash(ctx, upstream) if rm == "baseline" else upstream["mix"]
        return content_hash("train", rm, data, train)

    def plan(self, ctx: RunContext) -> str:
        return f"train x2 (baseline: original only; music: the mix): {describe_trainer(ctx, ctx.config.train)}"

    def run(self, ctx: RunContext, step: str) -> dict[str, Any]:
        from .training_stage import train_reward_model

        rm = step.removeprefix("train-")
        result = train_reward_model(ctx, name=rm, train_data=str(ctx.paths.mix_file(RUN_RMS[rm])))
        return {k: v for k, v in result.metrics.items() if not isinstance(v, dict)}

    def report(self, ctx: RunContext) -> tuple[Any, list[str]]:
        rms = {rm: load_json(ctx.paths.rm_marker(rm)) for rm in RUN_RMS}  # the training stage's own record
        summaries = {rm: (m or {}).get("summary") or {} for rm, m in rms.items()}
        validity = validity_line(ctx) if any(rms.values()) else None
        if not any(summaries.values()) and not validity:
            return rms, []
        lines = ["## Reward models", ""]
        if any(summaries.values()):
            labels = list(dict.fromkeys(k for s in summaries.values() for k in s))  # in the trainer's order
            lines += ["| RM | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
            lines += [f"| {rm} | " + " | ".join(_cell(s.get(k)) for k in labels) + " |" for rm, s in summaries.items() if s]
            lines.append("")
        return rms, lines + ([validity, ""] if validity else [])


class EvalStage(Stage):
    name, report_key = "eval", "evaluations"

    def steps(self, ctx: RunContext) -> list[str]:
        return [f"eval-{name}" for name in ctx.config.eval.evaluators]

    def output_dir(self, ctx: RunContext, step: str) -> Path | None:
        return ctx.paths.eval_dir(step.removeprefix("eval-"))

    def skip_reason(self, ctx: RunContext, step: str) -> str | None:
        cls = ctx.registry.find("evaluator", step.removeprefix("eval-"))
        return None if cls is None else cls.skip_reason(getattr(ctx.config.eval, cls.section_name(), None))

    def inputs_hash(self, ctx: RunContext, step: str, upstream: dict[str, str]) -> str:
        c = ctx.config
        return content_hash("eval", step.removeprefix("eval-"), *(upstream[f"train-{rm}"] for rm in RUN_RMS),
                            plain(c.eval), plain(c.models), plain(c.roles))

    def plan(self, ctx: RunContext) -> str:
        parts = []
        for name in ctx.config.eval.evaluators:
            cls = ctx.registry.find("evaluator", name)
            parts.append(cls.describe(getattr(ctx.config.eval, cls.section_name(), None)) if cls
                         else f"{name} (not registered)")
        return f"eval: {'; '.join(parts)}"

    def run(self, ctx: RunContext, step: str) -> dict[str, Any]:
        from .evaluation import run_evaluator

        out = run_evaluator(ctx, step.removeprefix("eval-"), {rm: str(ctx.paths.rm_dir(rm)) for rm in RUN_RMS})
        return {"results": out["results_path"], "report": out["markdown_path"]}

    def report(self, ctx: RunContext) -> tuple[Any, list[str]]:
        results: dict[str, Any] = {}
        lines: list[str] = []
        skipped: dict[str, str] = {}
        for name in ctx.config.eval.evaluators:
            res = load_json(ctx.paths.eval_results(name))
            if res is None:
                reason = self.skip_reason(ctx, f"eval-{name}")
                if reason:
                    skipped[name] = reason
                continue
            results[name] = res
            # an evaluator's images sit beside its own report: point at them from the run report
            prefix = os.path.relpath(ctx.paths.eval_dir(name), ctx.paths.root).replace(os.sep, "/")
            lines += [_reroot_images(ctx.paths.eval_report(name).read_text(), prefix), ""]
        if skipped:  # named in the report, never an error mid-run
            results["skipped"] = skipped
            lines += ["## Evaluations skipped", ""] + [f"- `{n}`: {why}" for n, why in skipped.items()] + [""]
        return results, lines


STAGES: dict[str, Stage] = {s.name: s for s in (SynthStage(), AuditStage(), MixStage(), TrainStage(), EvalStage())}


def stage_hashes(ctx: RunContext) -> dict[str, str]:
    """Every step's inputs hash, in stage order (each chained to the ones before it)."""
    hashes: dict[str, str] = {}
    for stage in STAGES.values():
        for step in stage.steps(ctx):
            hashes[step] = stage.inputs_hash(ctx, step, hashes)
    return hashes


def _batch_note(synth: dict[str, Any]) -> str:
    batched = sorted(n for n, e in (synth.get("endpoints_this_run") or {}).items() if e.get("batch"))
    return f" (batch price on {', '.join(batched)})" if batched else ""


def _reroot_images(markdown: str, prefix: str) -> str:
    """Prefix the relative image links of a Markdown page (not URLs, not absolute paths)."""
    return re.sub(r"!\[([^\]]*)\]\((?![a-z]+:|/)([^)]+)\)", lambda m: f"![{m[1]}]({prefix}/{m[2]})", markdown)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return "" if value is None else str(value)
