"""Scoring conversations for an evaluator: progress in conversations scored (not in reward models
finished), and what each reward model could not see.

A multi-turn RM that had the first exchange cut away cannot score a defect there. So every
evaluator scores through :func:`score_conversations`, which keeps the scorer's
:class:`~music_core.contracts.Seen` per conversation, and reports :func:`truncation` per RM:
the share cut, the share whose first user turn is gone, and accuracy on items seen whole vs cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import progress
from .contracts import RewardScorer, Seen
from .data import Message

CHUNK = 256  # conversations per call to the scorer: small enough for steady progress lines


@dataclass
class Scored:
    rewards: list[float]
    seen: list[Seen] | None
    limits: dict[str, Any]


def score_conversations(scorer: RewardScorer, conversations: Sequence[list[Message]],
                        task: progress.Task | None = None) -> Scored:
    """Rewards for ``conversations`` in chunks, advancing ``task`` by conversations scored."""
    rewards: list[float] = []
    seen: list[Seen] | None = []
    for k in range(0, len(conversations), CHUNK):
        chunk = list(conversations[k:k + CHUNK])
        r, s = scorer.score_seen(chunk)
        rewards += r
        seen = None if s is None or seen is None else seen + s
        if task is not None:
            task.advance(len(chunk))
    return Scored(rewards, seen, scorer.limits())


def rm_vote(diff: float, margin: float = 0.0, sides: tuple[str, str] = ("chosen", "rejected")) -> str:
    """An RM's vote on a pair from its reward difference r(first) - r(second): ``"tie"`` within
    ``margin``, else the side it prefers, in the report's own words (``("model_a", "model_b")``)."""
    return "tie" if abs(diff) <= margin else sides[0] if diff > 0 else sides[1]


def scoring_task(evaluator: str, conversations: int, reward_models: int) -> progress.Task:
    return progress.Task(evaluator, total=conversations * reward_models, unit="conversations")


def items_seen(seen: list[Seen] | None, items: Sequence[Sequence[int]]) -> list[Seen] | None:
    """Per item (a pair, a best-of-n set: indices into the scored conversations): cut when any of
    its conversations was cut, first turn cut when any lost it, tokens of the longest."""
    if seen is None:
        return None
    return [Seen(max(seen[i].tokens for i in idx), any(seen[i].cut for i in idx),
                 any(seen[i].first_turn_cut for i in idx)) for idx in items]


def truncation(seen: list[Seen] | None, limits: dict[str, Any], hits: Sequence[float | None] | None = None) -> dict[str, Any]:
    """What one RM saw of the items it scored: counts and shares cut and first-turn-cut, and
    (with per-item ``hits``, None for an item not counted) accuracy on items seen whole vs cut."""
    if seen is None:
        return {"known": False, **limits}
    n = len(seen)
    cut = sum(s.cut for s in seen)
    first = sum(s.first_turn_cut for s in seen)
    out: dict[str, Any] = {"known": True, "items": n, "cut": cut, "first_turn_cut": first,
                           "share_cut": round(cut / n, 4) if n else 0.0,
                           "share_first_turn_cut": round(first / n, 4) if n else 0.0, **limits}
    if hits is not None:
        for label, want in (("seen_whole", False), ("cut", True)):
            h = [x for s, x in zip(seen, hits) if s.cut == want and x is not None]
            out[f"accuracy_{label}"] = {"accuracy": round(sum(h) / len(h), 4) if h else None, "n": len(h)}
    return out


def describe_truncation(rm: str, t: dict[str, Any]) -> str:
    """One sentence per RM; a warning in words when most items were cut."""
    if not t.get("known"):
        return f"- {rm}: truncation unknown (its scorer does not report what it cut)."
    limit = t.get("max_length")
    text = (f"- {rm}: {t['cut']} of {t['items']} items cut to fit {limit or '?'} tokens ({t['share_cut']:.0%}); "
            f"the whole first user turn cut away in {t['first_turn_cut']} ({t['share_first_turn_cut']:.0%})")
    if "accuracy_seen_whole" in t:
        whole, cut = t["accuracy_seen_whole"], t["accuracy_cut"]
        fmt = lambda a: "n/a" if a["accuracy"] is None else f"{a['accuracy']:.3f} (n={a['n']})"  # noqa: E731
        text += f"; accuracy seen whole {fmt(whole)}, cut {fmt(cut)}"
    text += "."
    if t["items"] and t["share_cut"] > 0.5:
        backbone = t.get("backbone_max_length")
        text += (f" **Most items were scored cut**: the RM saw only their last turns. Raise `train.max_length` "
                 f"(now {limit}" + (f"; the backbone's limit is {backbone}" if backbone else "") + ") or use a "
                 "backbone with a longer context; a defect in a cut-away turn cannot be scored.")
    return text


def truncation_lines(blocks: dict[str, dict[str, Any]]) -> list[str]:
    """The report section: one line per RM."""
    if not blocks:
        return []
    return ["", "What each reward model could not see (conversations longer than its max length lose their "
                "oldest turns):", ""] + [describe_truncation(rm, t) for rm, t in blocks.items()]
