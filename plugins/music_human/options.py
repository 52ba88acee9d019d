"""The human-labelled evaluators' sections (``eval.helpsteer3``, ``eval.mt_bench_human``,
``eval.arena``, ``eval.ppe_human``), present when the evaluator is selected."""

from __future__ import annotations

from dataclasses import dataclass

from music_core.config.schema import option as _f


@dataclass
class HumanEvalConfig:
    data: str | None = _f(None, "hub id or local path (parquet, jsonl, json.gz, an Arrow snapshot folder); null: skipped")
    split: str = _f("train", "split to score")
    name: str | None = _f(None, "the dataset's config on the hub, where it has several")
    limit: int | None = _f(None, "score at most this many items (a seeded sample); null: all")
    language: str | None = _f(None, "score only items in this language (as the data names it, case-insensitive)")
    tie_margin: float = _f(0.0, "a reward difference within this is the RM's tie")
    batch_size: int = _f(16, "conversations per scoring batch")
    bootstrap: int = _f(2000, "bootstrap resamples for the 95% intervals")
    seed: int = _f(0, "seed of the sample and the bootstrap")


@dataclass
class HelpSteer3Config(HumanEvalConfig):
    split: str = _f("validation", "split to score (train or validation)")
    name: str | None = _f("preference", "the dataset's config on the hub")
    min_abs_preference: int = _f(1, "score only items with |overall_preference| at least this (1-3); 0 is no "
                                    "preference and is always dropped")


@dataclass
class MTBenchHumanConfig(HumanEvalConfig):
    split: str = _f("human", "human (3,355 votes) or gpt4_pair")
    reference_judge: str = _f("human", "whose votes the RM is compared with, as FastChat's compute_agreement names "
                                       "them: human (expert_* judges), author, gpt4-pair")


@dataclass
class ArenaConfig(HumanEvalConfig):
    pass


@dataclass
class PPEHumanConfig(HumanEvalConfig):
    split: str = _f("test", "split to score")
