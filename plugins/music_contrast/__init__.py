"""Contrast strategies: the paper's instruction contrast, and two that target multi-turn
failures (forgetting earlier turns, dropping part of a multi-part instruction)."""

from music_core import hookimpl

from .drop_part import DropPartContrast
from .filters import DistinctAnswersFilter
from .forget_history import ForgetHistoryContrast
from .instruction import InstructionContrast


@hookimpl
def register_contrast_strategies(register):
    register(InstructionContrast)
    register(ForgetHistoryContrast)
    register(DropPartContrast)


@hookimpl
def register_pair_filters(register):
    register(DistinctAnswersFilter)
