"""``music inspect``: a local page over a run's pairs (or any preference file): two conversations
side by side, turn-aligned, blind labelling by keyboard into ``labels.jsonl``."""

from music_core import hookimpl


@hookimpl
def register_commands(register):
    from .command import inspect

    register(inspect)
