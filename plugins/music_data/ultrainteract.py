"""UltraInteract (openbmb): SFT records ``{id, instruction, response}`` and pair records
``{id, trajectory: [{from, value}], chosen, rejected}``."""

from __future__ import annotations

from typing import Any, cast

from music_core import records
from music_core.data import Conversation, Message, PreferencePair, content_hash
from music_core.records import UnusableRecord

ROLE = {"user": "user", "human": "user", "observation": "user", "assistant": "assistant", "gpt": "assistant"}


def _trajectory(rec: dict[str, Any]) -> list[dict[str, str]]:
    msgs: list[dict[str, str]] = []
    for turn in rec.get("trajectory") or []:
        role = ROLE.get(str(turn.get("from", "")).lower())
        if role is None:
            raise ValueError(f"unknown trajectory speaker {turn.get('from')!r}")
        if msgs and msgs[-1]["role"] == role:
            msgs[-1]["content"] += "\n" + turn["value"]
            records.note_merged(1)
        else:
            msgs.append({"role": role, "content": turn["value"]})
    return msgs


def ui_conversation(rec: dict[str, Any]) -> Conversation:
    if "instruction" in rec:
        msgs = [{"role": "user", "content": rec["instruction"]}]
    else:
        msgs = _trajectory(rec)
        while msgs and msgs[-1]["role"] == "assistant":
            msgs.pop()
    if not msgs:
        raise ValueError("record has neither 'instruction' nor a user turn in 'trajectory'")
    # roles come from ROLE and contents are strings: the shape of a Message
    return Conversation(id=str(rec.get("id") or content_hash(msgs)), messages=cast(list[Message], msgs),
                        source="ultrainteract")


def ui_pair(rec: dict[str, Any]) -> PreferencePair:
    prefix = _trajectory(rec)
    if not prefix or prefix[-1]["role"] != "user":
        raise ValueError("pair record needs a trajectory ending with a user turn")
    chosen = prefix + [{"role": "assistant", "content": rec["chosen"]}]
    rejected = prefix + [{"role": "assistant", "content": rec["rejected"]}]
    pair = PreferencePair(id=str(rec.get("id") or content_hash(chosen, rejected)), chosen=chosen, rejected=rejected,
                          source="ultrainteract")
    problems = pair.problems(allow_empty_answers=True)
    if problems:
        raise UnusableRecord(problems[0][0], "; ".join(text for _, text in problems))
    return pair
