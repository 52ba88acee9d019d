"""``music train``: resolve the trainer and its data paths from the run, then train."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

from .contracts import Trainer, TrainResult
from .jsonl import write_text_atomic
from .paths import RM_MARKER

if TYPE_CHECKING:
    from .context import RunContext


def train_reward_model(ctx: RunContext, name: str | None = None, train_data: str | None = None) -> TrainResult:
    """Train with ``train.*``; ``name`` picks the output folder (``<output_dir>/rm/<name>``)
    and ``train_data`` overrides the data (``music run`` trains a baseline and a MUSIC RM)."""
    cfg = ctx.config.train
    paths = ctx.paths
    train_file = train_data or cfg.train_data or str(paths.mix_file("train"))
    resolved = dataclasses.replace(
        cfg,
        train_data=train_file,
        eval_data=cfg.eval_data or (str(paths.mix_file("eval")) if paths.mix_file("eval").exists() else None),
        output_dir=str(ctx.rm_dir(name)) if (name or not cfg.output_dir) else cfg.output_dir,
    )
    if not Path(train_file).exists():
        from .errors import MusicError

        raise MusicError(f"train: {resolved.train_data} not found (run `music mix` first, or set train.train_data)")
    trainer: Trainer = ctx.component("trainer", cfg.trainer)
    result = trainer.train(resolved)
    # The stage, not the trainer, records who made the folder: evaluation loads its scorer
    # through that trainer, whatever the trainer itself writes.
    out = Path(result.model_dir)
    out.mkdir(parents=True, exist_ok=True)
    marker = {"trainer": cfg.trainer, "description": result.description, "summary": result.summary}
    write_text_atomic(out / RM_MARKER, json.dumps(marker, default=str) + "\n")
    return result
