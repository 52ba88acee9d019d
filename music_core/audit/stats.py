"""Rates with Wilson 95% intervals, broken down by what a pair was made with."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from .. import stats
from ..stats import rate as rate  # re-exported: the audit's reports use it from here


def counts(verdicts: Iterable[str]) -> dict[str, int]:
    from .verdicts import VERDICTS

    out = dict.fromkeys(VERDICTS, 0)
    for v in verdicts:
        out[v] += 1
    return out


def summary(verdicts: list[str]) -> dict[str, Any]:
    """Validity (preferred chosen in both orders), with every other outcome counted beside it."""
    c = counts(verdicts)
    n = len(verdicts)
    return {**rate(c["valid"], n), "counts": c, "flip_rate": round(c["flip"] / n, 4) if n else None}


def breakdown(items: Iterable[Any], key: Callable[[Any], Any], verdict: Callable[[Any], str]) -> list[dict[str, Any]]:
    """Validity per value of ``key``, in the order the values sort."""
    groups: dict[Any, list[str]] = defaultdict(list)
    for item in items:
        groups[key(item)].append(verdict(item))
    return [{"value": value, **summary(vs)} for value, vs in sorted(groups.items(), key=lambda kv: str(kv[0]))]


def turn_bucket(n: int) -> str:
    return stats.turn_bucket(n, starts=(1, 2, 3, 4, 5))  # the audit's own: each count up to 4 apart


def tells_apart(correct: int, wrong: int) -> dict[str, Any]:
    """Whether an auditor separates known pairs: among the known pairs it decided the same way in
    both orders, does it pick the known better side more often than the worse one? An exact
    one-sided sign test; a judge with no skill (or a pure position bias) is right as often as
    wrong."""
    decided = correct + wrong
    if decided == 0:
        return {"decided": 0, "p_value": None, "tells_apart": False}
    from scipy.stats import binomtest

    p = float(binomtest(correct, decided, 0.5, alternative="greater").pvalue)
    return {"decided": decided, "p_value": round(p, 6), "tells_apart": p < 0.05}
