"""Best-of-N's options: the ``eval.bon`` section, present when the evaluator is selected."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from music_core.config.schema import DataSourceConfig, component_options
from music_core.config.schema import option as _f


@dataclass
class PromptSetConfig(DataSourceConfig):
    source: str = _f("builtin-prompts", "registered seed source of Best-of-N prompts")
    limit: int | None = _f(8, "prompts per set")


@dataclass
class BonConfig:
    prompt_sets: dict[str, PromptSetConfig] = field(
        default_factory=dict,
        metadata={"help": "named prompt sets (the paper: anthropic-hh, ultrainteract); empty: the built-in set"})
    turns: int = _f(2, "H: assistant turns per conversation (paper: 3)")
    n: list[int] = _f([1, 2, 4], "candidates per turn; N=1 is the single-sample baseline")
    judge: str = _f("pairwise", "registered judge")
    judge_options: dict[str, Any] = component_options("judge", "judge", "options of the judge")
    greedy_baseline: bool = _f(False, "N=1 decodes greedily (the paper's 'BoN vs greedy'); else one sample")
    distinct_candidates: bool = _f(True, "a candidate that repeats an earlier one of its pool is sampled again "
                                         "(up to 4 times; the count is reported)")
    concurrency: int = _f(32, "conversations in flight at once")
    bootstrap: int = _f(1000, "bootstrap resamples for 95% intervals")
    seed: int = _f(0, "seed of the bootstrap")
