"""Reward models judged against humans on multi-turn conversations: HelpSteer3, MT-Bench human
judgments, Chatbot Arena and PPE, each read in its dataset's own schema."""

from music_core import hookimpl

from .datasets import Arena, HelpSteer3, MTBenchHuman, PPEHuman


@hookimpl
def register_evaluators(register):
    for evaluator in (HelpSteer3, MTBenchHuman, Arena, PPEHuman):
        register(evaluator)
