"""Progress display shared by every stage: one rich Progress per process, tasks added on demand.

On a terminal: live bars. Without one (a log file, CI, ``nohup``): a plain line per task every
``interval_s`` seconds (``run.progress_interval_s``), from a timer thread, so a stage that is
busy inside a long step still reports: done/total, rate, ETA, and the LLM calls, tokens and cost
so far. Silent when disabled (tests, ``run.progress=false``).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

_progress: Any = None
_enabled = True
_interval_s = 30.0
_tasks: list[Task] = []
_ticker: threading.Thread | None = None
_stop = threading.Event()
_lock = threading.Lock()


def enable(flag: bool, interval_s: float | None = None) -> None:
    global _enabled, _interval_s
    _enabled = flag
    if interval_s is not None:
        _interval_s = max(0.1, float(interval_s))


def _is_terminal() -> bool:
    return sys.stderr.isatty()


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
                             console=console, disable=not (_enabled and _is_terminal()), transient=False)
        _progress.start()
    return _progress


def _fmt_duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def _tick() -> None:
    while not _stop.wait(_interval_s):
        with _lock:
            tasks = list(_tasks)
        for t in tasks:
            line = t.status_line()
            if line:
                print(line, file=sys.stderr, flush=True)


def _start_ticker() -> None:
    global _ticker
    if _ticker is None or not _ticker.is_alive():
        _stop.clear()
        _ticker = threading.Thread(target=_tick, name="music-progress", daemon=True)
        _ticker.start()


class Task:
    """A progress bar; ``advance`` and ``info`` are cheap enough for per-call updates.

    ``unit`` names what is counted (pairs, steps); ``detail`` returns extra figures for the
    plain lines (the LLM pool's ``totals``: calls, tokens, cost)."""

    def __init__(self, description: str, total: float | None = None, *, unit: str = "",
                 detail: Callable[[], dict[str, float]] | None = None, completed: float = 0):
        """``completed``: work done by an earlier run (shown, but not part of the rate)."""
        self._p = _get()
        self._id = self._p.add_task(description, total=total, info="", completed=completed)
        self.description, self.total, self.unit, self.detail = description, total, unit, detail
        self.completed = float(completed)
        self._start = time.monotonic()
        self._start_completed = float(completed)
        self._info = ""
        if _enabled and not _is_terminal() and total is not None:
            with _lock:
                _tasks.append(self)
            _start_ticker()

    def advance(self, n: float = 1, info: str | None = None) -> None:
        self.completed += n
        if info is not None:
            self._info = info
        kw = {"info": info} if info is not None else {}
        self._p.update(self._id, advance=n, **kw)

    def update(self, **kw: Any) -> None:
        if "completed" in kw:
            self.completed = kw["completed"]
        if "info" in kw:
            self._info = kw["info"]
        self._p.update(self._id, **kw)

    def status_line(self) -> str:
        """``[synth] 12/34 pairs (35%) · 3.1 pairs/min · ETA 7m05s · calls 234 · 12,345 tok · $0.0123``."""
        elapsed = time.monotonic() - self._start
        done_here = self.completed - self._start_completed
        parts = [f"[{self.description}] {self.completed:g}/{self.total:g} {self.unit}".rstrip()]
        if self.total:
            parts[0] += f" ({self.completed / self.total:.0%})"
        rate = done_here / elapsed * 60 if elapsed > 0 else 0.0
        parts.append(f"{rate:.1f} {self.unit or 'items'}/min")
        if rate > 0 and self.total:
            parts.append(f"ETA {_fmt_duration((self.total - self.completed) / rate * 60)}")
        parts.append(f"elapsed {_fmt_duration(elapsed)}")
        if self.detail is not None:
            try:
                d = self.detail()
                parts.append(f"calls {int(d.get('calls', 0)):,} · {int(d.get('tokens', 0)):,} tok · "
                             f"${d.get('cost_usd', 0.0):.4f}")
            except Exception:  # a progress line must never take the work down
                pass
        if self._info:
            parts.append(self._info)
        return " · ".join(parts)

    def close(self) -> None:
        with _lock:
            if self in _tasks:
                _tasks.remove(self)
                if _enabled and not _is_terminal() and self.total is not None:
                    print(self.status_line() + " · done", file=sys.stderr, flush=True)
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
    with _lock:
        _tasks.clear()
