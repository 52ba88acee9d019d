"""Win rates with ties as half a win, and percentile-bootstrap 95% intervals over prompts."""

from __future__ import annotations

import random
from collections.abc import Sequence

SCORE = {"win": 1.0, "tie": 0.5, "loss": 0.0}


def win_rate(outcomes: Sequence[str]) -> float:
    return sum(SCORE[o] for o in outcomes) / len(outcomes) if outcomes else float("nan")


def bootstrap_ci(outcomes: Sequence[str], resamples: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    if not outcomes:
        return float("nan"), float("nan")
    rng = random.Random(seed)
    vals = [SCORE[o] for o in outcomes]
    n = len(vals)
    stats = sorted(sum(vals[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    lo = stats[int((1 - level) / 2 * resamples)]
    hi = stats[min(resamples - 1, int((1 + level) / 2 * resamples))]
    return lo, hi


def summarize(outcomes: Sequence[str], resamples: int, seed: int) -> dict[str, float]:
    lo, hi = bootstrap_ci(outcomes, resamples, seed)
    return {"prompts": len(outcomes), "wins": sum(o == "win" for o in outcomes), "ties": sum(o == "tie" for o in outcomes),
            "losses": sum(o == "loss" for o in outcomes), "win_rate": round(win_rate(outcomes), 4),
            "ci95_low": round(lo, 4), "ci95_high": round(hi, 4)}
