"""Anthropic HH-RLHF: each side is one transcript string with ``\\n\\nHuman:`` and
``\\n\\nAssistant:`` markers. As Best-of-N prompts, a record is the dialogue up to and including
its last human turn."""

from __future__ import annotations

import re
from typing import Any, Literal

from music_core.data import Conversation, Message, PreferencePair, content_hash, conversation_errors

_TURN = re.compile(r"\n\n(Human|Assistant): ")


def parse_transcript(text: str) -> list[Message]:
    if not isinstance(text, str) or "Human:" not in text:
        raise ValueError("not an HH transcript (no 'Human:' turn)")
    parts = _TURN.split("\n\n" + text.lstrip("\n") if not text.startswith("\n\n") else text)
    msgs: list[Message] = []
    for speaker, content in zip(parts[1::2], parts[2::2]):
        role: Literal["user", "assistant"] = "user" if speaker == "Human" else "assistant"
        content = content.strip()
        if msgs and msgs[-1]["role"] == role:  # HH has a few doubled turns: merge them
            msgs[-1]["content"] += "\n" + content
        elif content or role == "assistant":
            msgs.append(Message(role=role, content=content))
    return msgs


def hh_pair(rec: dict[str, Any]) -> PreferencePair | None:
    chosen, rejected = parse_transcript(rec["chosen"]), parse_transcript(rec["rejected"])
    pair = PreferencePair(id=str(rec.get("id") or content_hash(chosen, rejected)), chosen=chosen, rejected=rejected,
                          source="hh-rlhf")
    return pair if not pair.errors() else None  # HH has empty and identical answers: skip those


def hh_conversation(rec: dict[str, Any]) -> Conversation | None:
    msgs = parse_transcript(rec["chosen"])
    while msgs and msgs[-1]["role"] == "assistant":
        msgs.pop()
    if conversation_errors(msgs):
        return None
    return Conversation(id=str(rec.get("id") or content_hash(msgs)), messages=msgs, source="hh-rlhf")
