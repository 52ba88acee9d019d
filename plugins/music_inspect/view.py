"""What the page shows of one pair: the two branches turn-aligned with the point where they
diverge, and, outside blind labelling, each contrasted turn's modified instruction, strategy and
fallback, the audit's verdicts and each RM's rewards (after each turn too)."""

from __future__ import annotations

from itertools import zip_longest
from typing import Any

from music_core.data import PreferencePair, common_prefix_length


def contrasts(pair: PreferencePair) -> dict[int, dict[str, Any]]:
    """Message index of each contrasted user turn -> what the rejected branch was really asked."""
    meta = pair.meta if isinstance(pair.meta, dict) else {}
    prefix = meta.get("prefix_messages")
    out: dict[int, dict[str, Any]] = {}
    if not isinstance(prefix, int):
        return out
    for t in meta.get("turns") or []:
        if isinstance(t, dict) and t.get("contrasted", True):
            out[prefix - 1 + 2 * (int(t["turn"]) - 1)] = {
                "turn": t["turn"], "modified": t.get("modified"), "strategy": t.get("strategy"),
                "fallback": t.get("fallback_reason") is not None}
    return out


def browse(i: int, total: int, pair: PreferencePair, audit: dict[str, Any] | None,
           scores: dict[str, Any]) -> dict[str, Any]:
    diverge = common_prefix_length(pair.chosen, pair.rejected)
    marks = contrasts(pair)
    audit_turns = {t["turn"]: t for t in (audit or {}).get("turns", [])}
    rows = []
    for k in range(max(len(pair.chosen), len(pair.rejected))):
        c = pair.chosen[k] if k < len(pair.chosen) else None
        r = pair.rejected[k] if k < len(pair.rejected) else None
        either = c if c is not None else r
        row: dict[str, Any] = {"i": k, "role": either["role"] if either else None, "chosen": c and c["content"],
                               "rejected": r and r["content"], "same": c == r}
        if k in marks:
            row["contrast"] = marks[k]
        if k - 1 in marks and marks[k - 1]["turn"] in audit_turns:  # the answer to a contrasted turn
            t = audit_turns[marks[k - 1]["turn"]]
            row["audit"] = {"verdict": t["verdict"], "p_chosen": t["p_chosen"]}
        rows.append(row)
    meta = pair.meta if isinstance(pair.meta, dict) else {}
    return {"index": i, "total": total, "id": pair.id, "source": pair.source, "diverge_at": diverge, "rows": rows,
            "strategy": meta.get("strategy"), "fallback": meta.get("made_by_fallback"),
            "audit": {"verdict": audit["verdict"], "p_chosen": audit["p_chosen"]} if audit else None,
            "scores": scores}


def blind(i: int, total: int, pair: PreferencePair, order: list[str], previous: str | None) -> dict[str, Any]:
    """Both sides in the labeller's seeded order, and nothing that tells which is chosen."""
    first, second = (getattr(pair, side) for side in order)
    diverge = common_prefix_length(first, second)
    rows = [{"i": k, "role": (a or b)["role"], "first": a and a["content"], "second": b and b["content"],
             "same": a == b}
            for k, (a, b) in enumerate(zip_longest(first, second))]  # missing turns of a shorter side: None
    return {"index": i, "total": total, "pair_id": pair.id, "diverge_at": diverge, "rows": rows, "previous": previous}

