"""The RMB evaluator's section (``eval.rmb``), present when the evaluator is selected."""

from __future__ import annotations

from dataclasses import dataclass

from music_core.config.schema import option as _f

SETS = ("pairwise", "bon")


@dataclass
class RMBConfig:
    data: str | None = _f(None, "RMB's RMB_dataset folder (github.com/Zhou-Zoey/RMB-Reward-Model-Benchmark), or any "
                                "file or subfolder of it; null: skipped")
    sets: list[str] = _f(list(SETS), "which sets to score: pairwise, bon (Best-of-N); a file's set is its "
                                     "category_path's first folder (Pairwise_set, BoN_set)")
    limit: int | None = _f(None, "score at most this many items of each set (a seeded sample; every record is "
                                 "still read and counted); null: all")
    batch_size: int = _f(16, "conversations per scoring batch")
    bootstrap: int = _f(2000, "bootstrap resamples for the 95% intervals")
    seed: int = _f(0, "seed of the sample and the bootstrap")
