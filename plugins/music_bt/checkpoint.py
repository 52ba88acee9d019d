"""Checkpoints with exact resume: model, optimizer, scheduler and every RNG through
accelerate's save_state, plus the step, the metrics not yet logged, and the fingerprint of the
config and data they were made with; the data order is a pure function of the step. A
checkpoint is written to a temporary folder and renamed, so a kill never leaves half of one.
A checkpoint made with another config or other data is never resumed: training starts fresh
and says what changed."""

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


def save(acc: Any, out: Path, step: int, fingerprint: dict[str, Any] | None = None,
         pending: list[dict[str, Any]] | None = None) -> None:
    root = _dir(out)
    final = root / f"step-{step:07d}"
    tmp = root / f".tmp-step-{step:07d}"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    acc.wait_for_everyone()
    acc.save_state(str(tmp))
    if acc.is_main_process:
        state = {"step": step, "fingerprint": fingerprint or {}, "pending_log": pending or []}
        (tmp / "music_state.json").write_text(json.dumps(state, default=str))
        os.replace(tmp, final)
        for old in sorted(root.glob("step-*"))[:-KEEP]:
            shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()


def latest(out: Path) -> Path | None:
    done = sorted(p for p in _dir(out).glob("step-*") if (p / "music_state.json").exists())
    return done[-1] if done else None


def changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += changed_keys(a, b, f"{prefix}{k}.")
        elif a != b:
            keys.append(f"{prefix}{k}")
    return keys


def resume(acc: Any, out: Path, log_path: Path, fingerprint: dict[str, Any] | None = None) -> tuple[int, list[dict[str, Any]]]:
    """Load the latest checkpoint (if any) made with this fingerprint; return the step to continue
    from and the metrics it had not logged yet. Log lines written after that checkpoint are
    dropped so the log matches an uninterrupted run."""
    ckpt = latest(out)
    if ckpt is not None and fingerprint is not None:
        state = json.loads((ckpt / "music_state.json").read_text())
        old = state.get("fingerprint") or {}
        if json.loads(json.dumps(old, default=str)) != json.loads(json.dumps(fingerprint, default=str)):
            changed = changed_keys(old, json.loads(json.dumps(fingerprint, default=str))) or ["(unrecorded)"]
            progress.log(f"not resuming {ckpt}: it was made with another config or other data (differs in: "
                         f"{', '.join(changed)}); training starts fresh")
            acc.wait_for_everyone()
            if acc.is_main_process:
                shutil.rmtree(_dir(out), ignore_errors=True)
            acc.wait_for_everyone()
            ckpt = None
    if ckpt is None:
        if log_path.exists() and acc.is_main_process:
            log_path.unlink()
        return 0, []
    acc.load_state(str(ckpt))
    state = json.loads((ckpt / "music_state.json").read_text())
    step = state["step"]
    if log_path.exists() and acc.is_main_process:
        kept = [ln for ln in log_path.read_text().splitlines() if json.loads(ln).get("step", 0) <= step]
        log_path.write_text("".join(ln + "\n" for ln in kept))
    progress.log(f"resuming from {ckpt} (step {step})")
    return step, list(state.get("pending_log") or [])
