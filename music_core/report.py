"""The run report: one Markdown page and one JSON file that gather every stage's section
(each stage writes its own: :meth:`music_core.stages.Stage.report`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config.load import role_endpoint
from .jsonl import write_text_atomic
from .stages import STAGES, load_json

if TYPE_CHECKING:
    from .context import RunContext


def write_report(ctx: RunContext, seconds: float) -> tuple[Path, Path]:
    paths, c = ctx.paths, ctx.config
    sections = {stage.report_key: stage.report(ctx) for stage in STAGES.values()}
    stages = {p.stem: load_json(p) for p in paths.stage_markers()}
    lines = [f"# MUSIC run report: `{paths.root}`", "",
             f"Roles: user simulator `{c.roles.user_simulator}`, assistant simulator `{c.roles.assistant_simulator}`, "
             f"policy `{c.roles.policy}`, judge `{c.roles.judge}`, auditor `{role_endpoint(c, 'auditor')}` "
             f"({', '.join(f'{k}={v.provider}:{v.model}' for k, v in c.models.items())}). "
             f"Reward models: {_trained_with(sections['reward_models'][0] or {}, c.train.trainer)}.", "",
             f"Wall time of this invocation: {seconds / 60:.1f} min; per stage: "
             + ", ".join(f"{k} {v['seconds']:.0f} s" for k, v in stages.items() if v) + ".", ""]
    headline = [h for name, res in (sections["evaluations"][0] or {}).items() if name != "skipped"
                for h in (res.get("headline") or [])]
    if headline:  # each evaluator's own one-line verdict, e.g. music vs baseline on human-labelled pairs
        lines += ["**Headline**", ""] + [f"- {h}" for h in headline] + [""]
    for _, markdown in sections.values():
        lines += markdown
    write_text_atomic(paths.report_md, "\n".join(lines))
    data = {key: section for key, (section, _) in sections.items()}
    write_text_atomic(paths.report_json, json.dumps({**data, "stages": stages, "seconds": seconds}, indent=2,
                                                    default=str) + "\n")
    return paths.report_md, paths.report_json


def _trained_with(rms: dict[str, Any], trainer: str) -> str:
    """The trainer, and what it says it trained."""
    trainers = sorted({str(m.get("trainer")) for m in rms.values() if m and m.get("trainer")}) or [trainer]
    described = sorted({str(m["description"]) for m in rms.values() if m and m.get("description")})
    return f"trainer `{', '.join(trainers)}`" + (f": {'; '.join(described)}" if described else "")
