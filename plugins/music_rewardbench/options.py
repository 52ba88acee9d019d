"""The RewardBench v1/v2 and pairwise-accuracy evaluators' sections (``eval.rewardbench``,
``eval.rewardbench2``, ``eval.pairwise``), present when the evaluator is selected."""

from __future__ import annotations

from dataclasses import dataclass

from music_core.config.schema import option as _f


@dataclass
class RewardBenchConfig:
    path: str | None = _f("builtin", "RewardBench v1 data: hub id (allenai/reward-bench), a local file/folder, "
                          "'builtin' (a 46-example set in its schema written for this project; not RewardBench), or null")
    split: str = _f("filtered", "split to score")
    batch_size: int = _f(16, "conversations per scoring batch (length-sorted)")


@dataclass
class RewardBench2Config(RewardBenchConfig):
    path: str | None = _f("builtin", "RewardBench 2 data: hub id (allenai/reward-bench-2), a local file/folder, "
                          "'builtin' (a smoke set in its schema written for this project; not RewardBench 2), or null")
    split: str = _f("test", "split to score")


@dataclass
class PairwiseEvalConfig:
    data: str | None = _f(None, "held-out pairs (default: the mix's eval split)")
    batch_size: int = _f(16, "conversations per scoring batch")
