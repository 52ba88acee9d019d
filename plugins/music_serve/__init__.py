"""``music serve``: reward models behind OpenRLHF's ``/get_reward``, vLLM's ``/classify`` and a
messages-in ``/v1/rewards``, batched through the packed scorer; reward functions for TRL and verl
in :mod:`music_serve.adapters`."""

from music_core import hookimpl


@hookimpl
def register_commands(register):
    from .command import serve

    register(serve)
