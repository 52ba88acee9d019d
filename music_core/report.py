"""The run report: one Markdown page and one JSON file that gather every stage's results."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from .jsonl import write_text_atomic


def _load(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def _reroot_images(markdown: str, prefix: str) -> str:
    """Prefix the relative image links of a Markdown page (not URLs, not absolute paths)."""
    return re.sub(r"!\[([^\]]*)\]\((?![a-z]+:|/)([^)]+)\)", lambda m: f"![{m[1]}]({prefix}/{m[2]})", markdown)


def write_report(ctx: Any, seconds: float) -> tuple[Path, Path]:
    out = ctx.output_dir
    synth = _load(ctx.synth_output().with_name(ctx.synth_output().stem + ".report.json"))
    mix = _load(ctx.mix_dir() / "summary.json")
    rms = {name: _load(ctx.rm_dir(name) / "metrics.json") for name in ("baseline", "music")}
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
    if any(rms.values()):
        lines += ["## Reward models", "", "| RM | train pairs | steps | final train loss | held-out accuracy | held-out pairs | "
                  "tokens/s | export |", "|---|---|---|---|---|---|---|---|"]
        for name, m in rms.items():
            if m:
                lines.append(f"| {name} | {m.get('train_pairs')} | {m.get('steps')} | {m.get('final_loss', float('nan')):.3f} | "
                             f"{m.get('eval_accuracy', float('nan')):.3f} | {m.get('eval_pairs', 0)} | {m.get('tokens_per_s', 0):.0f} | "
                             f"{m.get('export_form', '?')} |")
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
    """The trainer, and the head and backbone where its metrics name them."""
    heads = sorted({str(m["head"]) for m in rms.values() if m and m.get("head")})
    backbones = sorted({str(m["backbone"]) for m in rms.values() if m and m.get("backbone")})
    detail = f": `{', '.join(heads)}` head on `{', '.join(backbones)}`" if heads and backbones else ""
    return f"trainer `{trainer}`{detail}"
