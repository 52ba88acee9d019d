"""Static preference evaluations: RewardBench v1 and 2, and pairwise accuracy on held-out pairs."""

from music_core import hookimpl

from .pairwise import PairwiseAccuracy
from .rewardbench import RewardBench
from .rewardbench2 import RewardBench2


@hookimpl
def register_evaluators(register):
    register(RewardBench)
    register(RewardBench2)
    register(PairwiseAccuracy)
