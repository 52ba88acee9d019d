"""The core's own plugin: pipeline commands (synth, audit, mix, train, eval, run), registered through
the same ``register_commands`` hook that third-party plugins use. Each command imports its
engine inside the function, so ``music --help`` stays light."""

from __future__ import annotations

from music_core import hookimpl

from .batches import batches_group
from .stage_commands import audit, eval_group, mix, run, sweep, synth, train


@hookimpl
def register_commands(register):
    for command in (synth, audit, mix, train, eval_group, run, sweep, batches_group):
        register(command)
