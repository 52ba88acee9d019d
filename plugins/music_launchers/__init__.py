"""Sweep launchers: ``local`` (one process per variant on this machine, N at a time) and
``submitit`` (SLURM through submitit, as Hydra's submitit launcher does; its local executor runs
the same jobs on this machine)."""

from music_core import hookimpl

from .local import LocalLauncher
from .slurm import SubmititLauncher


@hookimpl
def register_launchers(register):
    register(LocalLauncher)
    register(SubmititLauncher)
