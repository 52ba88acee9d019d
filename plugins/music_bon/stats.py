"""Win rates with ties as half a win, and percentile-bootstrap 95% intervals over prompts (the
core's: a win rate with ties as half is an accuracy)."""

from __future__ import annotations

from collections.abc import Sequence

from music_core.stats import accuracy

SCORE = {"win": 1.0, "tie": 0.5, "loss": 0.0}


def win_rate(outcomes: Sequence[str]) -> float:
    return sum(SCORE[o] for o in outcomes) / len(outcomes) if outcomes else float("nan")


def summarize(outcomes: Sequence[str], resamples: int, seed: int) -> dict[str, float]:
    ci = accuracy([SCORE[o] for o in outcomes], resamples, seed)["ci95"]
    lo, hi = ci if ci is not None else (float("nan"), float("nan"))
    return {"prompts": len(outcomes), "wins": sum(o == "win" for o in outcomes), "ties": sum(o == "tie" for o in outcomes),
            "losses": sum(o == "loss" for o in outcomes), "win_rate": round(win_rate(outcomes), 4),
            "ci95_low": round(lo, 4), "ci95_high": round(hi, 4)}
