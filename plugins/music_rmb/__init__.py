"""RMB (Zhou et al., ICLR 2025; github.com/Zhou-Zoey/RMB-Reward-Model-Benchmark): reward models on
RMB's pairwise and Best-of-N sets, read in RMB's own schema and scored with RMB's win rule."""

from music_core import hookimpl

from .evaluator import RMB


@hookimpl
def register_evaluators(register):
    register(RMB)
