"""The core's own plugin: pipeline commands (synth, mix, train, eval, run), registered through
the same ``register_commands`` hook that third-party plugins use."""

from __future__ import annotations

from music_core import hookimpl


@hookimpl
def register_commands(register):
    pass
