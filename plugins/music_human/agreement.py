"""MT-Bench agreement as FastChat's ``compute_agreement.py`` counts it: per turn, the votes of
one (question, model pair) keyed with the models in sorted order; the RM casts one vote per key;
agreement over every reference vote, with ties (three-way) and without (a tie on either side
leaves that vote out); human-human agreement over every pair of votes on one key."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from music_core.scoring import rm_vote
from music_core.stats import rate

from .schema import Comparison

# The published reference rows (Zheng et al. 2023, MT-Bench human judgments), for beside the RMs.
PUBLISHED = [
    {"judges": "GPT-4 (pair) vs human", "turn": 1, "with_ties": 0.66, "without_ties": 0.85},
    {"judges": "GPT-4 (pair) vs human", "turn": 2, "with_ties": 0.66, "without_ties": 0.85},
    {"judges": "human vs human", "turn": 1, "with_ties": 0.63, "without_ties": 0.81},
    {"judges": "human vs human", "turn": 2, "with_ties": 0.67, "without_ties": 0.82},
]


def revert(vote: str) -> str:
    return {"model_a": "model_b", "model_b": "model_a"}.get(vote, vote)


def is_tie(vote: str) -> bool:
    return "tie" in vote


def same(v1: str, v2: str) -> bool:
    return (is_tie(v1) and is_tie(v2)) or v1 == v2


def by_key(items: Sequence[Comparison], diffs: Sequence[float], margin: float, turn: int) -> tuple[dict, dict]:
    """Per key of one turn: the reference votes and the RM's vote, both with the models in sorted order."""
    votes: dict[tuple, list[str]] = defaultdict(list)
    rm: dict[tuple, str] = {}
    for item, d in zip(items, diffs):
        if item.meta["turn"] != turn:
            continue
        key, flip = tuple(item.meta["key"]), item.meta["flip"]
        votes[key].append(revert(item.label) if flip else item.label)
        vote = rm_vote(d, margin, sides=("model_a", "model_b"))  # the RM's vote on (A, B)
        rm.setdefault(key, revert(vote) if flip else vote)  # the same conversations: one vote per key
    return votes, rm


def rm_agreement(items: Sequence[Comparison], diffs: Sequence[float], margin: float) -> list[dict[str, Any]]:
    rows = []
    for turn in (1, 2):
        votes, rm = by_key(items, diffs, margin, turn)
        for ties in (True, False):
            agree = total = 0
            for key, vs in votes.items():
                if not ties and is_tie(rm[key]):
                    continue
                for v in vs:
                    if not ties and is_tie(v):
                        continue
                    total += 1
                    agree += same(rm[key], v)
            rows.append({"turn": turn, "ties": "with ties" if ties else "without ties",
                         **rate(agree, total, names=("agree", "total"), key="ratio", interval=False)})
    return rows


def reference_agreement(items: Sequence[Comparison]) -> list[dict[str, Any]]:
    """Reference judge vs itself on this data: every pair of votes on one key."""
    rows = []
    for turn in (1, 2):
        votes, _ = by_key(items, [0.0] * len(items), 0.0, turn)
        for ties in (True, False):
            agree = total = 0
            for vs in votes.values():
                for i in range(len(vs) - 1):
                    for j in range(i + 1, len(vs)):
                        if not ties and (is_tie(vs[i]) or is_tie(vs[j])):
                            continue
                        total += 1
                        agree += same(vs[i], vs[j])
            rows.append({"turn": turn, "ties": "with ties" if ties else "without ties",
                         **rate(agree, total, names=("agree", "total"), key="ratio", interval=False)})
    return rows
