"""Anthropic HH-RLHF: each side is one transcript string with ``\\n\\nHuman:`` and
``\\n\\nAssistant:`` markers (the core's readers parse them wherever a preference file is read).
As Best-of-N prompts, a record is the dialogue up to and including its last human turn."""

from __future__ import annotations

from typing import Any

from music_core.data import Conversation, PreferencePair, content_hash, conversation_problems
from music_core.formats import pair_from_record, parse_transcript
from music_core.records import UnusableRecord


def hh_pair(rec: dict[str, Any]) -> PreferencePair:
    """A pair as the core reads any HH record: empty user turns, identical sides and broken
    turn order are skipped and counted by the reader; empty answers are kept."""
    return pair_from_record(rec, "trl", source="hh-rlhf")


def hh_conversation(rec: dict[str, Any]) -> Conversation:
    if rec.get("chosen") is None:
        raise UnusableRecord("missing_field", "missing 'chosen'")
    msgs = parse_transcript(rec["chosen"])
    while msgs and msgs[-1]["role"] == "assistant":
        msgs.pop()
    problems = conversation_problems(msgs, allow_empty_answers=True)
    if problems:
        raise UnusableRecord(problems[0][0], "; ".join(text for _, text in problems))
    return Conversation(id=str(rec.get("id") or content_hash(msgs)), messages=msgs, source="hh-rlhf")
