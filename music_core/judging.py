"""Pairwise judging in both orders: position bias cancels, and a judge that disagrees with
itself when the order flips has not decided anything (a tie)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .contracts import Judge, Verdict
from .data import Message

Outcome = Literal["a", "b", "tie"]


@dataclass
class JudgedPair:
    outcome: Outcome
    first: Verdict   # a shown as A
    second: Verdict  # b shown as A
    judged: bool = True  # False when the conversations were identical and no judge was asked
    p_a: float | None = None  # position-debiased probability that a is better (probability verdicts)

    @property
    def parsed(self) -> int:
        """How many of the two verdicts could be read."""
        return sum(v.method != "unparsed" for v in (self.first, self.second)) if self.judged else 0

    @property
    def consistent(self) -> bool | None:
        """Did the judge prefer the same conversation in both orders (None: not judged or unread)?"""
        if not self.judged or self.parsed < 2:
            return None
        return {"A": "a", "B": "b"}.get(self.first.winner, "tie") == {"A": "b", "B": "a"}.get(self.second.winner, "tie")

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "judged": self.judged, "p_a": self.p_a, "consistent": self.consistent,
                "verdicts": [{"winner": v.winner, "method": v.method, "p_first": v.p_first, "reasons": v.reasons[:500]}
                             for v in (self.first, self.second)]}


async def judge_both_orders(judge: Judge, a: list[Message], b: list[Message], llm: Any, prefix_len: int = 0) -> JudgedPair:
    if a == b:
        same = Verdict("tie", "identical conversations", method="identical")
        return JudgedPair("tie", same, same, judged=False)
    v1 = await judge.compare(a, b, llm, prefix_len)
    v2 = await judge.compare(b, a, llm, prefix_len)
    if v1.p_first is not None and v2.p_first is not None:
        # Averaging the two orders cancels a constant position bias: a judge that always says
        # "A" with 0.8 gives 0.5 here, while a real preference moves both orders the same way.
        p_a = (v1.p_first + (1.0 - v2.p_first)) / 2
        margin = judge.tie_margin
        outcome: Outcome = "a" if p_a > 0.5 + margin else "b" if p_a < 0.5 - margin else "tie"
        return JudgedPair(outcome, v1, v2, p_a=p_a)
    w1 = {"A": "a", "B": "b"}.get(v1.winner, "tie")
    w2 = {"A": "b", "B": "a"}.get(v2.winner, "tie")
    return JudgedPair(w1 if w1 == w2 else "tie", v1, v2)  # type: ignore[arg-type]


# ---- reading a judgement of (chosen, rejected): the audit and the judges beside the RMs ----------

VERDICTS = ("valid", "invalid", "flip", "tie", "unparsed")


def preferred(judged: JudgedPair) -> tuple[str | None, str | None]:
    """Which side each order preferred (``chosen``/``rejected``; None for a tie or no verdict):
    chosen is shown first in the first order and second in the second."""
    first = {"A": "chosen", "B": "rejected"}.get(judged.first.winner) if judged.first.method != "unparsed" else None
    second = {"A": "rejected", "B": "chosen"}.get(judged.second.winner) if judged.second.method != "unparsed" else None
    return first, second


def classify(judged: JudgedPair) -> str:
    if not judged.judged:
        return "tie"  # identical sides: nothing to prefer
    if judged.parsed < 2:
        return "unparsed"
    first, second = preferred(judged)
    if first is None or second is None:
        return "tie"
    if first == second:
        return "valid" if first == "chosen" else "invalid"
    return "flip"


def p_chosen(judged: JudgedPair) -> float | None:
    """The position-debiased probability that chosen is better: the mean of the two orders'
    label probabilities where the endpoint gave them, else the mean of the two text verdicts
    (1 chosen, 0 rejected, 0.5 a tie). None when a verdict could not be read."""
    if not judged.judged:
        return 0.5
    if judged.parsed < 2:
        return None
    if judged.p_a is not None:
        return round(judged.p_a, 6)
    score = {"chosen": 1.0, "rejected": 0.0, None: 0.5}
    first, second = preferred(judged)
    return (score[first] + score[second]) / 2
