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

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "judged": self.judged,
                "verdicts": [{"winner": v.winner, "reasons": v.reasons[:500]} for v in (self.first, self.second)]}


async def judge_both_orders(judge: Judge, a: list[Message], b: list[Message], llm: Any, prefix_len: int = 0) -> JudgedPair:
    if a == b:
        same = Verdict("tie", "identical conversations")
        return JudgedPair("tie", same, same, judged=False)
    v1 = await judge.compare(a, b, llm, prefix_len)
    v2 = await judge.compare(b, a, llm, prefix_len)
    w1 = {"A": "a", "B": "b"}.get(v1.winner, "tie")
    w2 = {"A": "b", "B": "a"}.get(v2.winner, "tie")
    return JudgedPair(w1 if w1 == w2 else "tie", v1, v2)  # type: ignore[arg-type]
