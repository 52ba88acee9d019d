"""Static preference evaluations: RewardBench v1 and pairwise accuracy on held-out pairs."""

from music_core import hookimpl

from .pairwise import PairwiseAccuracy
from .rewardbench import RewardBench


@hookimpl
def register_evaluators(register):
    register(RewardBench)
    register(PairwiseAccuracy)
