"""Checkpoints with exact resume: model, optimizer, scheduler and every RNG through
accelerate's save_state, plus the step; the data order is a pure function of the step. A
checkpoint is written to a temporary folder and renamed, so a kill never leaves half of one."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from music_core import progress

KEEP = 2


def _dir(out: Path) -> Path:
    return out / "checkpoints"


def save(acc: Any, out: Path, step: int) -> None:
    root = _dir(out)
    final = root / f"step-{step:07d}"
    tmp = root / f".tmp-step-{step:07d}"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    acc.wait_for_everyone()
    acc.save_state(str(tmp))
    if acc.is_main_process:
        (tmp / "music_state.json").write_text(json.dumps({"step": step}))
        os.replace(tmp, final)
        for old in sorted(root.glob("step-*"))[:-KEEP]:
            shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()


def latest(out: Path) -> Path | None:
    done = sorted(p for p in _dir(out).glob("step-*") if (p / "music_state.json").exists())
    return done[-1] if done else None


def resume(acc: Any, out: Path, log_path: Path) -> int:
    """Load the latest checkpoint (if any) and return the step to continue from; log lines
    written after that checkpoint are dropped so the log matches an uninterrupted run."""
    ckpt = latest(out)
    if ckpt is None:
        if log_path.exists() and acc.is_main_process:
            log_path.unlink()
        return 0
    acc.load_state(str(ckpt))
    step = json.loads((ckpt / "music_state.json").read_text())["step"]
    if log_path.exists() and acc.is_main_process:
        kept = [ln for ln in log_path.read_text().splitlines() if json.loads(ln).get("step", 0) <= step]
        log_path.write_text("".join(ln + "\n" for ln in kept))
    progress.log(f"resuming from {ckpt} (step {step})")
    return step
