"""The depth evaluator's section (``eval.depth``), present when the evaluator is selected."""

from __future__ import annotations

from dataclasses import dataclass

from music_core.config.schema import option as _f

from .build import DEFAULT_DEPTHS, KINDS


@dataclass
class DepthConfig:
    data: str | None = _f(None, "a depth benchmark file (`music bench depth --out FILE`); null: build one from "
                                "eval.depth.conversations")
    conversations: str | None = _f(None, "conversations to build the benchmark from first: any file the readers "
                                         "accept as conversations (message lists) or pairs (their chosen sides); "
                                         "null: the chosen sides of the run's held-out pairs (the mix's eval split, "
                                         "as pairwise-accuracy reads it)")
    limit: int | None = _f(64, "build from at most this many conversations (a seeded sample, kept in file order), "
                               "so that `music run` stays cheap; null: all of them")
    depths: list[int] = _f(list(DEFAULT_DEPTHS), "depths to build (0: the last answer, 1: the one before, ...)")
    kinds: list[str] = _f(list(KINDS), "defect kinds to build: off-topic, repeat, first-sentence")
    batch_size: int = _f(16, "conversations per scoring batch")
    bootstrap: int = _f(2000, "bootstrap resamples for the 95% intervals")
    seed: int = _f(0, "seed of the off-topic draws and of the bootstrap")
