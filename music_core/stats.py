"""Intervals and tests every report shares, from scipy: Wilson intervals for rates, percentile
bootstrap intervals for accuracies, and the paired comparison of two reward models on the same
items (a paired bootstrap interval of the accuracy difference and an exact McNemar test). Public:
third-party evaluators report their comparisons the same way."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

RESAMPLES = 2000
BENCHMARK_TURNS = (1, 2, 3, 5)  # where the benchmarks' turn buckets start: "1", "2", "3-4", "5+"


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float] | None:
    """The Wilson score interval of k successes in n (None when n is 0)."""
    if n == 0:
        return None
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    return round(float(ci.low), 4), round(float(ci.high), 4)


def rate(k: int, n: int, *, names: tuple[str, str] = ("k", "n"), key: str = "rate",
         interval: bool = True) -> dict[str, Any]:
    """``k`` of ``n`` as a rate rounded to 4 places (None when n is 0), with its Wilson 95% interval
    as ``ci95`` unless ``interval`` is off. ``names`` and ``key`` are the report's own words for
    the counts and the rate (an agreement reports ``("agree", "total")``)."""
    out: dict[str, Any] = {names[0]: k, names[1]: n, key: round(k / n, 4) if n else None}
    if interval:
        out["ci95"] = wilson(k, n)
    return out


def turn_buckets(starts: Sequence[int] = BENCHMARK_TURNS) -> tuple[str, ...]:
    """The names of the turn buckets that begin at ``starts``: one count ("2"), a range ("3-4"),
    and the last open ("5+")."""
    inner = [str(a) if b - a == 1 else f"{a}-{b - 1}" for a, b in zip(starts, starts[1:])]
    return (*inner, f"{starts[-1]}+")


def turn_bucket(n: int, starts: Sequence[int] = BENCHMARK_TURNS) -> str:
    """The bucket of a conversation of ``n`` turns (fewer than the first start: the first)."""
    return turn_buckets(starts)[max((i for i, s in enumerate(starts) if n >= s), default=0)]


def _percentile_ci(data: tuple[Any, ...], statistic: Any, resamples: int, seed: int, paired: bool) -> tuple[float, float]:
    import numpy as np
    from scipy.stats import bootstrap

    arrays = tuple(np.asarray(d, dtype=float) for d in data)
    if all(np.all(a == a[0]) for a in arrays) or len(arrays[0]) < 2:
        value = float(statistic(*arrays))  # nothing varies: the interval is the point
        return round(value, 4), round(value, 4)
    res = bootstrap(arrays, statistic, paired=paired, vectorized=False, n_resamples=resamples,
                    confidence_level=0.95, method="percentile", rng=np.random.default_rng(seed))
    return round(float(res.confidence_interval.low), 4), round(float(res.confidence_interval.high), 4)


def accuracy(hits: Sequence[float], resamples: int = RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """Mean of 0/1 outcomes (0.5 for a tie counted half right) with a percentile-bootstrap 95%
    interval over items."""
    import numpy as np

    n = len(hits)
    if n == 0:
        return {"n": 0, "accuracy": None, "ci95": None}
    return {"n": n, "accuracy": round(sum(hits) / n, 4),
            "ci95": _percentile_ci((hits,), np.mean, resamples, seed, paired=False)}


def paired_difference(hits_a: Sequence[float], hits_b: Sequence[float], resamples: int = RESAMPLES,
                      seed: int = 0) -> dict[str, Any]:
    """Accuracy of A minus accuracy of B on the same items: a paired bootstrap 95% interval and
    the exact McNemar p-value (a two-sided sign test on the items where exactly one is right;
    with ties counted half right, where one did strictly better)."""
    if len(hits_a) != len(hits_b):
        raise ValueError("paired comparison needs the same items for both reward models")
    n = len(hits_a)
    if n == 0:
        return {"n": 0, "difference": None, "ci95": None, "p_value": None, "a_only": 0, "b_only": 0,
                "excludes_zero": False}
    from scipy.stats import binomtest

    a_only = sum(1 for a, b in zip(hits_a, hits_b) if a > b)
    b_only = sum(1 for a, b in zip(hits_a, hits_b) if b > a)
    diff = (sum(hits_a) - sum(hits_b)) / n
    lo, hi = _percentile_ci((hits_a, hits_b), lambda x, y: x.mean() - y.mean(), resamples, seed, paired=True)
    p = float(binomtest(a_only, a_only + b_only, 0.5).pvalue) if a_only + b_only else 1.0
    return {"n": n, "difference": round(diff, 4), "ci95": (lo, hi), "p_value": round(p, 6),
            "a_only": a_only, "b_only": b_only, "excludes_zero": lo > 0 or hi < 0}


def say_paired(a: str, b: str, d: dict[str, Any], items: str = "items") -> str:
    """One sentence: the difference in points, its interval, and whether it is outside noise."""
    if not d["n"]:
        return f"{a} vs {b}: no common {items}"
    lo, hi = d["ci95"]
    verdict = ("the interval excludes 0: a real difference" if d["excludes_zero"]
               else "the interval includes 0: no difference outside noise")
    return (f"{a} vs {b}: {100 * d['difference']:+.1f} points [{100 * lo:+.1f}, {100 * hi:+.1f}] on {d['n']} {items} "
            f"(McNemar p = {d['p_value']:.3g}; {d['a_only']} only {a} right, {d['b_only']} only {b}); {verdict}")


def paired_table(hits: Mapping[str, Sequence[float]], resamples: int = RESAMPLES, seed: int = 0) -> list[dict[str, Any]]:
    """Every pair of reward models (in the order given), compared on the same items."""
    names = list(hits)
    return [{"a": a, "b": b, **paired_difference(hits[a], hits[b], resamples, seed)}
            for i, a in enumerate(names) for b in names[i + 1:]]
