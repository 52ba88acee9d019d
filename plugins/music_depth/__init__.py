"""Where in a conversation can a reward model see a defect? Pairs identical except one assistant
answer at depth ``d`` from the end (``music bench depth``), scored by ``music eval depth``:
accuracy by depth, defect kind and number of turns, with intervals and a plot."""

from music_core import hookimpl


@hookimpl
def register_evaluators(register):
    from .evaluator import Depth

    register(Depth)


@hookimpl
def register_commands(register):
    from .command import bench

    register(bench)
