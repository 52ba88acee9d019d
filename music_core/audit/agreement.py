"""Agreement of human labels with the pair's own label, the auditor, each reward model and other
humans: with ties and without (FastChat's convention: a tie on either side leaves the item out;
"both bad" counts as a tie), Cohen's kappa with a bootstrap interval, Wilson intervals on the
agreement rates."""

from __future__ import annotations

from itertools import combinations
from typing import Any

from ..stats import rate
from .labels import latest

TIE = "tie"


def category(vote: str | None) -> str | None:
    """chosen, rejected or tie ("invalid", both bad, is a tie); None: no vote."""
    if vote is None:
        return None
    return TIE if vote in ("tie", "invalid") else vote


def kappa(xs: list[str], ys: list[str]) -> float | None:
    """Cohen's kappa of two raters over the same items (None when chance agreement is certain)."""
    n = len(xs)
    if n == 0:
        return None
    cats = set(xs) | set(ys)
    po = sum(x == y for x, y in zip(xs, ys)) / n
    pe = sum((xs.count(c) / n) * (ys.count(c) / n) for c in cats)
    return None if pe >= 1.0 else round((po - pe) / (1 - pe), 4)


def kappa_ci(xs: list[str], ys: list[str], resamples: int = 2000, seed: int = 0) -> tuple[float, float] | None:
    import numpy as np

    if len(xs) < 2 or kappa(xs, ys) is None:
        return None
    rng = np.random.default_rng(seed)
    n = len(xs)
    values = []
    for _ in range(resamples):
        idx = rng.integers(0, n, n)
        k = kappa([xs[i] for i in idx], [ys[i] for i in idx])
        if k is not None:
            values.append(k)
    if not values:
        return None
    return round(float(np.percentile(values, 2.5)), 4), round(float(np.percentile(values, 97.5)), 4)


def compare(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Agreement of (human, other) votes, with and without ties."""
    with_ties = [(h, o) for h, o in pairs]
    without = [(h, o) for h, o in pairs if TIE not in (h, o)]

    def agreement(rows: list[tuple[str, str]]) -> dict[str, Any]:
        return rate(sum(h == o for h, o in rows), len(rows), names=("agree", "total"))

    hs, os_ = [h for h, _ in pairs], [o for _, o in pairs]
    return {"with_ties": agreement(with_ties), "without_ties": agreement(without), "kappa": kappa(hs, os_),
            "kappa_ci95": kappa_ci(hs, os_)}


def human_agreement(labels: list[dict[str, Any]], auditor: dict[str, str | None],
                    rm_votes: dict[str, dict[str, str]]) -> dict[str, Any]:
    """``auditor``: pair id -> chosen/rejected/tie (None: unreadable); ``rm_votes``: RM -> pair
    id -> chosen/rejected/tie."""
    last = latest(labels)
    votes = [(pid, who, category(r.get("preferred"))) for (pid, who), r in last.items()]
    out: dict[str, Any] = {"labels": len(labels), "labelled_pairs": len({pid for pid, _, _ in votes}),
                           "labellers": sorted({who for _, who, _ in votes})}
    out["vs_pair_label"] = compare([(v, "chosen") for _, _, v in votes if v])
    out["vs_pair_label"].update(kappa=None, kappa_ci95=None, kappa_note="undefined: the pair label is always 'chosen'")
    out["vs_auditor"] = compare([(v, a) for pid, _, v in votes if v and (a := category(auditor.get(pid)))])
    out["vs_rm"] = {name: compare([(v, rm[pid]) for pid, _, v in votes if v and pid in rm])
                    for name, rm in rm_votes.items()}
    by_pair: dict[str, dict[str, str]] = {}
    for pid, who, v in votes:
        if v:
            by_pair.setdefault(pid, {})[who] = v
    overlap = [(a, b) for who in by_pair.values() for (_, a), (_, b) in combinations(sorted(who.items()), 2)]
    out["human_vs_human"] = compare(overlap) if overlap else None
    return out


def auditor_vote(verdict: str | None) -> str | None:
    """An audit record's verdict as a vote on the pair."""
    return {"valid": "chosen", "invalid": "rejected", "flip": TIE, "tie": TIE}.get(verdict or "")
