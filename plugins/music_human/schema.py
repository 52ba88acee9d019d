"""Each dataset's own schema, read into one shape: two conversations that end in the answers a
person compared, who won, and what the item is (turns, language). A row that is not scored is
counted by reason; a file without a required column is refused, naming the column."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from music_core.data import Message, conversation_errors
from music_core.errors import RecordError
from music_core.formats import iter_raw_records, text_of_parts

TURN_BUCKETS = ("1", "2", "3-4", "5+")


@dataclass
class Comparison:
    id: str
    a: list[Message]   # the conversation ending with response A (model_a, response1)
    b: list[Message]
    winner: str        # "a", "b" or "tie"
    user_turns: int    # user turns up to and including the one answered
    language: str | None = None
    label: str = ""    # the winner as the data spells it ("tie (bothbad)", 2, ...)
    meta: dict[str, Any] = field(default_factory=dict)


def turn_bucket(n: int) -> str:
    return "1" if n <= 1 else "2" if n == 2 else "3-4" if n <= 4 else "5+"


def winner_of(value: Any) -> str:
    """model_a, model_b, or a tie: any value containing "tie", and both_bad."""
    w = str(value).strip().lower()
    if w == "model_a":
        return "a"
    if w == "model_b":
        return "b"
    if "tie" in w or w in ("both_bad", "bothbad"):
        return "tie"
    raise ValueError(f"unknown winner {value!r} (expected model_a, model_b or a tie)")


def messages_of(raw: Any, column: str) -> list[Message]:
    """A conversation as a list of {role, content}, content a string or a list of typed parts,
    or the same list JSON-encoded in a string."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise ValueError(f"column {column!r} is a string that is not a JSON list of messages") from None
    if not isinstance(raw, list):
        raise ValueError(f"column {column!r} is not a list of messages")
    out: list[Message] = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict) or "role" not in m:
            raise ValueError(f"column {column!r}: message {i} has no role")
        content = m.get("content")
        text = content if isinstance(content, str) else text_of_parts(content)
        if text is None:
            raise ValueError(f"column {column!r}: message {i} has no text content")
        role = {"human": "user", "gpt": "assistant", "model": "assistant", "bot": "assistant"}.get(m["role"], m["role"])
        out.append({"role": role, "content": text})  # type: ignore[typeddict-item]
    return out


def valid(conv: list[Message], column: str) -> list[Message]:
    errors = conversation_errors(conv, must_end_with="assistant")
    if errors:
        raise ValueError(f"{column}: {errors[0]}")
    return conv


def user_turns(conv: list[Message]) -> int:
    return sum(m["role"] == "user" for m in conv)


Parser = Callable[[dict[str, Any], int, Any, Counter[str]], "Comparison | None"]


def read(section: Any, required: tuple[str, ...], parse: Parser) -> tuple[list[Comparison], Counter[str], int]:
    """Every row of the section's data through ``parse``; rows it returns None for are dropped
    (``parse`` counts why). Returns the comparisons, the drop counts and the rows read."""
    items: list[Comparison] = []
    dropped: Counter[str] = Counter()
    rows = 0
    for where, line, rec in _records(section):
        rows += 1
        if not isinstance(rec, dict):
            raise RecordError(where, line, "record is not an object")
        missing = [c for c in required if c not in rec]
        if missing:
            raise RecordError(where, line, f"missing required column {missing[0]!r} (required: {list(required)})")
        try:
            item = parse(rec, rows - 1, section, dropped)
        except (ValueError, TypeError, KeyError) as exc:
            raise RecordError(where, line, str(exc)) from None
        if item is None:
            continue
        if section.language and (item.language or "").lower() != section.language.lower():
            dropped[f"language is not {section.language}"] += 1
            continue
        items.append(item)
    return items, dropped, rows


def _records(section: Any) -> Iterator[tuple[str, int | None, Any]]:
    return iter_raw_records(section.data, section.split, section.name)
