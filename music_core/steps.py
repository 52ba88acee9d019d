"""The store of finished steps, content-addressed (``run.shared_dir``; ``music sweep`` sets it): a
step whose inputs hash is already made in the store is linked into the run, not made again; one
being made by another run is waited for (an exclusive file lock per step and hash), never raced.
The run's own folder for the step (its stage's :meth:`~music_core.stages.Stage.output_dir`) is
a symbolic link into ``<shared_dir>/<step>/<hash>/``, so nothing is copied silently and each
run's layout stays what ``music run`` writes."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .jsonl import write_text_atomic


@dataclass
class Claim:
    made: dict[str, Any] | None   # the marker of a step another run made; None: this run makes it
    sharing: bool = True
    done_file: Path | None = None

    def finish(self, marker: dict[str, Any]) -> None:
        if self.sharing and self.done_file is not None:
            write_text_atomic(self.done_file, json.dumps(marker, indent=2, default=str) + "\n")


@contextmanager
def shared_step(root: Path, step: str, h: str, local: Path) -> Iterator[Claim]:
    """Hold the step's lock; link the run's folder to the shared one; say whether it is made."""
    base = root / step
    base.mkdir(parents=True, exist_ok=True)
    target, done = base / h, base / f"{h}.done.json"
    with open(base / f"{h}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # blocks while another run makes this very step
        try:
            if local.exists() and not local.is_symlink():
                yield Claim(None, sharing=False)  # made by this run before it joined a sweep: its own
                return
            target.mkdir(parents=True, exist_ok=True)
            if local.is_symlink() and local.resolve() != target.resolve():
                local.unlink()  # the run's config changed: the step's inputs are others now
            if not local.is_symlink():
                local.parent.mkdir(parents=True, exist_ok=True)
                local.symlink_to(os.path.relpath(target, local.parent), target_is_directory=True)
            yield Claim(json.loads(done.read_text()) if done.exists() else None, done_file=done)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
