"""Running evaluators: reward models by name, scorers loaded through the trainer that made them,
results written as JSON and Markdown under ``<output_dir>/eval/<evaluator>/``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .contracts import EvalReport, RewardModel, RewardScorer
from .errors import ConfigError, MusicError
from .jsonl import write_text_atomic
from .paths import RM_MARKER, RUN_RMS
from .records import describe_read

if TYPE_CHECKING:
    from .context import RunContext


def load_scorer(ctx: RunContext, model_dir: str, batch_size: int | None = None) -> RewardScorer:
    """The scorer of an RM folder, from the trainer named in its marker. RMs saved elsewhere (any
    HF sequence-classification folder, or a hub id such as ``Skywork/Skywork-Reward-Llama-3.1-8B``)
    go through the first registered trainer that ``loads_plain_folders``. A registered model
    alias names its folder."""
    from .models import resolve_model

    try:
        model_dir = resolve_model(model_dir)
    except MusicError:
        raise MusicError(f"reward model folder not found: {Path(model_dir)}") from None
    path = Path(model_dir)
    hub_id = not path.exists() and model_dir.count("/") == 1 and not model_dir.startswith((".", "/", "~"))
    if not path.exists() and not hub_id:
        raise MusicError(f"reward model folder not found: {path}")
    trainer = None
    for marker in (path / RM_MARKER, path / "music_rm.json"):  # the stage's marker; older folders: the trainer's
        if marker.exists():
            trainer = json.loads(marker.read_text()).get("trainer")
            break
    if trainer is None:
        plain = [n for n in ctx.registry.names("trainer") if ctx.registry.get("trainer", n).loads_plain_folders]
        if not plain:
            raise MusicError(f"{path}: a reward model no trainer of this run made, and no registered trainer "
                             f"loads plain Hugging Face folders (Trainer.loads_plain_folders)")
        trainer = plain[0]
    return ctx.component("trainer", trainer).load_scorer(str(path), batch_size)


def resolve_reward_models(ctx: RunContext, given: dict[str, str] | None) -> dict[str, str]:
    rms = dict(given or ctx.config.eval.reward_models)
    if not rms:
        defaults = {n: str(ctx.paths.rm_dir(n)) for n in RUN_RMS
                    if ctx.paths.rm_marker(n).exists() or (ctx.paths.rm_dir(n) / "config.json").exists()}
        rms = defaults
    if not rms:
        raise ConfigError("config key 'eval.reward_models': no reward models to evaluate "
                          "(set eval.reward_models.NAME=PATH, pass --rm NAME=PATH, or run `music run`)")
    return rms


def run_evaluator(ctx: RunContext, name: str, reward_models: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one evaluator under the record rule: what its readers read, kept and skipped goes into
    ``results.json`` (``n_total``, ``n_scored``, ``n_skipped``, ``records``) and the report, and
    every skipped record into ``skipped_records.jsonl`` beside them."""
    rms = resolve_reward_models(ctx, reward_models)
    evaluator = ctx.component("evaluator", name)
    handles = {rm: RewardModel(path, rm, lambda p, bs: load_scorer(ctx, p, bs)) for rm, path in rms.items()}
    with ctx.reading(f"eval {name}") as tally:
        report: EvalReport = evaluator.run(handles)
    side = tally.write_side_file(ctx.paths.eval_skipped(name))
    read = {"n_total": tally.read, "n_scored": report.results.get("n_scored", tally.kept),
            "n_skipped": tally.n_skipped, "records": {**tally.summary(), "skipped_file": str(side) if side else None}}
    results_path, md_path = ctx.paths.eval_results(name), ctx.paths.eval_report(name)
    write_text_atomic(results_path, json.dumps({"evaluator": name, "reward_models": rms, **report.results, **read},
                                               indent=2, default=str) + "\n")
    write_text_atomic(md_path, with_read_line(report.markdown, read, side))
    from .judge_scoring import raise_if_incomplete

    raise_if_incomplete(name, report.results, str(md_path))  # exit 75 after the report: a rerun judges the rest
    return {"results_path": str(results_path), "markdown_path": str(md_path), "figures": report.figures,
            "report": report}


def with_read_line(markdown: str, read: dict[str, Any], side: Path | None) -> str:
    """The evaluator's Markdown with 'Records: read N, kept K, skipped S ...' under its heading."""
    if not read["n_total"]:
        return markdown
    line = f"Records: {describe_read(read['records'])}; {read['n_scored']} items scored."
    if side:
        line += f" Skipped records are listed in `{side}`."
    head, sep, rest = markdown.partition("\n")
    return f"{head}\n\n{line}\n{rest}" if sep and head.startswith("#") else f"{line}\n\n{markdown}"
