"""What one both-orders judgement of (chosen, rejected) says about the pair, and which slices of a
pair the audit judges.

A judgement is read as exactly one of:

- ``valid``: the auditor preferred chosen in both orders;
- ``invalid``: it preferred rejected in both orders;
- ``flip``: it preferred the same *position* in both orders (a position effect, no decision);
- ``tie``: it called a tie in an order (or the two sides were identical);
- ``unparsed``: a verdict could not be read.

Only ``valid`` counts as valid: a flip or an unread verdict is never booked as a success.
"""

from __future__ import annotations

from typing import Any

from ..data import Message, PreferencePair, common_prefix_length
from ..judging import JudgedPair

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


def contrasted_turns(pair: PreferencePair) -> list[dict[str, Any]]:
    """The turns the audit judges one by one, each with the two branches' histories up to and
    including that turn's answer. A MUSIC pair names its contrasted turns in ``meta.turns``; any
    other pair is judged at each assistant turn after the branches diverge, when there are two or
    more (a single differing answer is what the whole-conversation verdict already judges)."""
    out: list[dict[str, Any]] = []
    turns = pair.meta.get("turns") if isinstance(pair.meta, dict) else None
    prefix = pair.meta.get("prefix_messages") if isinstance(pair.meta, dict) else None
    if isinstance(turns, list) and isinstance(prefix, int):
        for t in turns:
            if not isinstance(t, dict) or not t.get("contrasted", True):
                continue
            end = prefix + 2 * (int(t["turn"]) - 1) + 1
            chosen, rejected = pair.chosen[:end], pair.rejected[:end]
            if len(chosen) < end or len(rejected) < end or chosen[-1]["role"] != "assistant":
                continue  # provenance that does not match the conversation: judge only what is there
            out.append({"turn": int(t["turn"]), "strategy": t.get("strategy"),
                        "fallback": t.get("fallback_reason") is not None,
                        "original": t.get("original"), "modified": t.get("modified"),
                        "chosen": chosen, "rejected": rejected})
        return out
    start = common_prefix_length(pair.chosen, pair.rejected)
    ends = [i + 1 for i in range(start, min(len(pair.chosen), len(pair.rejected)))
            if pair.chosen[i]["role"] == "assistant" and pair.rejected[i]["role"] == "assistant"]
    if len(ends) < 2:
        return []
    return [{"turn": k, "strategy": None, "fallback": False, "original": None, "modified": None,
             "chosen": pair.chosen[:end], "rejected": pair.rejected[:end]} for k, end in enumerate(ends, start=1)]


def last_text(messages: list[Message]) -> str:
    return messages[-1]["content"] if messages else ""
