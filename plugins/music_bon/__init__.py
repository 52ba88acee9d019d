"""Multi-turn Best-of-N evaluation, the pairwise LLM judge, and a judge-based pair filter."""

from music_core import hookimpl

from .bon import BestOfN
from .judge import JudgePrefersChosen, LastTurnJudge, PairwiseJudge


@hookimpl
def register_judges(register):
    register(PairwiseJudge)
    register(LastTurnJudge)


@hookimpl
def register_evaluators(register):
    register(BestOfN)


@hookimpl
def register_pair_filters(register):
    register(JudgePrefersChosen)
