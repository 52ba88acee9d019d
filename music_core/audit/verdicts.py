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
from ..judging import VERDICTS as VERDICTS  # re-exported: the reading lives with the judging core
from ..judging import classify as classify
from ..judging import p_chosen as p_chosen
from ..judging import preferred as preferred


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
