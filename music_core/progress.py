"""Progress display shared by every stage: one rich Progress per process, tasks added on
demand. Silent when disabled (tests, `run.progress=false`) or when stderr is no terminal."""

from __future__ import annotations

import sys
from typing import Any

_progress: Any = None
_enabled = True


def enable(flag: bool) -> None:
    global _enabled
    _enabled = flag


def _get():
    global _progress
    if _progress is None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        console = Console(stderr=True)
        _progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), TextColumn("{task.fields[info]}"),
                             console=console, disable=not (_enabled and sys.stderr.isatty()), transient=False)
        _progress.start()
    return _progress


class Task:
    """A progress bar; ``advance`` and ``info`` are cheap enough for per-call updates."""

    def __init__(self, description: str, total: float | None = None):
        self._p = _get()
        self._id = self._p.add_task(description, total=total, info="")

    def advance(self, n: float = 1, info: str | None = None) -> None:
        kw = {"info": info} if info is not None else {}
        self._p.update(self._id, advance=n, **kw)

    def update(self, **kw: Any) -> None:
        self._p.update(self._id, **kw)

    def close(self) -> None:
        self._p.update(self._id, visible=False)
        self._p.remove_task(self._id)


def log(message: str) -> None:
    """A line above the bars (or on stderr when they are off)."""
    if _progress is not None and not _progress.disable:
        _progress.console.print(message, highlight=False, markup=False)
    else:
        print(message, file=sys.stderr, flush=True)


def stop() -> None:
    global _progress
    if _progress is not None:
        _progress.stop()
        _progress = None
