"""The run report: one Markdown page and one JSON file that gather every stage's results."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from .jsonl import write_text_atomic
from .training_stage import RM_MARKER


def _load(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def _reroot_images(markdown: str, prefix: str) -> str:
    """Prefix the relative image links of a Markdown page (not URLs, not absolute paths)."""
    return re.sub(r"!\[([^\]]*)\]\((?![a-z]+:|/)([^)]+)\)", lambda m: f"![{m[1]}]({prefix}/{m[2]})", markdown)


def write_report(ctx: Any, seconds: float) -> tuple[Path, Path]:
    out = ctx.output_dir
    synth = _load(ctx.synth_output().with_name(ctx.synth_output().stem + ".report.json"))
    mix = _load(ctx.mix_dir() / "summary.json")
    rms = {name: _load(ctx.rm_dir(name) / RM_MARKER) for name in ("baseline", "music")}  # the training stage's record
    evals = {}
    for name in ctx.config.eval.evaluators:
        res = _load(ctx.eval_dir() / name / "results.json")
        if res is not None:
            md = (ctx.eval_dir() / name / "report.md").read_text()
            # an evaluator's images sit beside its own report: point at them from the run report
            prefix = os.path.relpath(ctx.eval_dir() / name, out).replace(os.sep, "/")
            md = _reroot_images(md, prefix)
            evals[name] = {"results": res, "markdown": md}
    stages = {p.stem: _load(p) for p in sorted((out / "stages").glob("*.json"))}
    c = ctx.config
    lines = [f"# MUSIC run report: `{out}`", "",
             f"Roles: user simulator `{c.roles.user_simulator}`, assistant simulator `{c.roles.assistant_simulator}`, "
             f"policy `{c.roles.policy}`, judge `{c.roles.judge}` "
             f"({', '.join(f'{k}={v.provider}:{v.model}' for k, v in c.models.items())}). "
             f"Reward models: {_trained_with(rms, c.train.trainer)}.", "",
             f"Wall time of this invocation: {seconds / 60:.1f} min; per stage: "
             + ", ".join(f"{k} {v['seconds']:.0f} s" for k, v in stages.items() if v) + ".", ""]
    if synth:
        lines += ["## Synthesis", "",
                  f"{synth['pairs']} MUSIC pairs ({synth['errors']} error rows, {synth['filtered']} filtered out), "
                  f"{synth['mean_turns']} turns per pair on average; prompt profile **{synth.get('prompt_profile')}**; "
                  f"user simulator turns usable on the first try {synth['user_simulator']['accepted_first_try']:.0%}; "
                  f"contrast turns made by the fallback strategy {synth['contrast']['fallbacks']} of "
                  f"{synth['contrast']['turns']} ({synth.get('fallback_turn_share', 0):.0%}). "
                  f"Details: `{ctx.synth_output().with_name(ctx.synth_output().stem + '.report.md')}`.", ""]
    if mix:
        lines += ["## Data mix", "", f"train {mix['train']}, eval {mix['eval']} (synthetic share of train "
                  f"{mix['synthetic_share_of_train']:.0%}).", ""]
    summaries = {name: (m or {}).get("summary") or {} for name, m in rms.items()}
    if any(summaries.values()):
        labels = list(dict.fromkeys(k for s in summaries.values() for k in s))  # in the trainer's order
        lines += ["## Reward models", "", "| RM | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        for name, summary in summaries.items():
            if summary:
                lines.append(f"| {name} | " + " | ".join(_cell(summary.get(k)) for k in labels) + " |")
        lines.append("")
    for e in evals.values():
        lines += [e["markdown"], ""]
    md_path, json_path = out / "report.md", out / "report.json"
    write_text_atomic(md_path, "\n".join(lines))
    write_text_atomic(json_path, json.dumps({"synth": synth, "mix": mix, "reward_models": rms,
                                             "evaluations": {k: v["results"] for k, v in evals.items()},
                                             "stages": stages, "seconds": seconds}, indent=2, default=str) + "\n")
    return md_path, json_path


def _trained_with(rms: dict[str, Any], trainer: str) -> str:
    """The trainer, and what it says it trained."""
    trainers = sorted({str(m.get("trainer")) for m in rms.values() if m and m.get("trainer")}) or [trainer]
    described = sorted({str(m["description"]) for m in rms.values() if m and m.get("description")})
    return f"trainer `{', '.join(trainers)}`" + (f": {'; '.join(described)}" if described else "")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return "" if value is None else str(value)
