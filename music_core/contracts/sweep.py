"""Sweep contracts: a variant job and the launchers that run a sweep's variants."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .base import Component

if TYPE_CHECKING:
    pass


@dataclass
class VariantJob:
    """One variant of a sweep, as a launcher starts it: a whole ``music run`` in its own process."""

    name: str
    argv: list[str]            # the command line (``[python, -m, music_core, run, ...]``)
    cwd: str
    env: dict[str, str]
    log: str                   # where its output goes


class Launcher(Component):
    """Starts a sweep's variants, each as its own process, and waits for them (Hydra's launcher
    plugins are the model: the sweep knows variants, the launcher only how to start a process).
    Variants that share a step wait for it on their own: the launcher need not order them."""

    options_key = "sweep.launcher_options"

    @abstractmethod
    def launch(self, jobs: list[VariantJob], parallel: int) -> list[int]:
        """Run every job, at most ``parallel`` at once where the launcher controls that; return
        each job's exit status, in the jobs' order."""
