"""Moved: the store of finished steps is the pipeline's own, :mod:`music_core.steps`; each stage
names its folder (:meth:`music_core.stages.Stage.output_dir`). Kept importable for existing users."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..steps import Claim, shared_step

if TYPE_CHECKING:
    from ..context import RunContext

__all__ = ["Claim", "shared_step", "step_dir"]


def step_dir(ctx: RunContext, step: str) -> Path | None:
    """The folder that holds everything a step writes (None: the step cannot be shared)."""
    from ..stages import STAGES

    stage = STAGES.get(step.split("-", 1)[0])  # synth, audit, mix, train-<rm>, eval-<evaluator>
    return stage.output_dir(ctx, step) if stage is not None else None
