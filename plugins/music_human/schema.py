"""Each dataset's own schema, read into one shape: two conversations that end in the answers a
person compared, who won, and what the item is (turns, language). A row that is not scored is
skipped and counted by reason (music_core.records), a row left out on purpose is counted apart,
and a file without a required column is refused, naming the column."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from music_core import records
from music_core.data import Message, conversation_problems, merge_same_role
from music_core.errors import RecordError
from music_core.formats import iter_raw_records, text_of_parts
from music_core.records import UnusableRecord
from music_core.stats import turn_buckets

TURN_BUCKETS = turn_buckets()


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
    or the same list JSON-encoded in a string. Same-role runs are merged (and counted)."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise UnusableRecord("invalid", f"column {column!r} is a string that is not a JSON list of messages") from None
    if not isinstance(raw, list):
        raise UnusableRecord("invalid", f"column {column!r} is not a list of messages")
    out: list[Message] = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict) or "role" not in m:
            raise UnusableRecord("invalid", f"column {column!r}: message {i} has no role")
        content = m.get("content")
        text = content if isinstance(content, str) else text_of_parts(content, text_only=True)
        if text is None:
            reason = "non_text_part" if isinstance(content, list) else "invalid"
            raise UnusableRecord(reason, f"column {column!r}: message {i} has no text content"
                                 + (" (a non-text part)" if reason == "non_text_part" else ""))
        role = {"human": "user", "gpt": "assistant", "model": "assistant", "bot": "assistant"}.get(m["role"], m["role"])
        out.append({"role": role, "content": text})  # type: ignore[typeddict-item]
    merged, n = merge_same_role(out)
    records.note_merged(n)
    return merged


def valid(conv: list[Message], column: str) -> list[Message]:
    """The conversation if it can be scored; an empty answer can (people judged it), an empty
    user turn or roles out of order cannot (skipped and counted by the reader)."""
    problems = conversation_problems(conv, must_end_with="assistant", allow_empty_answers=True)
    if problems:
        raise UnusableRecord(problems[0][0], f"{column}: {problems[0][1]}")
    return conv


def user_turns(conv: list[Message]) -> int:
    return sum(m["role"] == "user" for m in conv)


Parser = Callable[[dict[str, Any], int, Any, Counter[str]], "Comparison | None"]


def read(section: Any, required: tuple[str, ...], parse: Parser) -> tuple[list[Comparison], Counter[str], int]:
    """Every row of the section's data through ``parse`` under the record rule: a file without a
    required column (judged on its first row) is an error naming it; a row ``parse`` cannot use
    is skipped and counted by reason; a row it returns None for is left out on purpose
    (``parse`` counts why, e.g. a judge that is not the one asked for). Returns the
    comparisons, the left-out counts and the rows read."""
    items: list[Comparison] = []
    dropped: Counter[str] = Counter()
    with records.tally_for(str(section.data)) as tally:
        for where, line, rec in _records(section):
            first = tally.read == 0
            tally.saw(where)
            missing = [c for c in required if c not in rec] if isinstance(rec, dict) else list(required)
            if missing and first:
                raise RecordError(where, line, f"missing required column {missing[0]!r} (required: {list(required)})")
            try:
                if missing:
                    raise UnusableRecord("missing_field", f"missing column {missing[0]!r}")
                item = parse(rec, tally.read - 1, section, dropped)
            except (ValueError, TypeError, KeyError) as exc:
                tally.skip(where, line, exc if isinstance(exc, ValueError) else UnusableRecord("invalid", str(exc)), rec)
                continue
            if item is not None and section.language and (item.language or "").lower() != section.language.lower():
                dropped[f"language is not {section.language}"] += 1
                item = None
            if item is not None:
                tally.kept += 1
                items.append(item)
        for why, n in dropped.items():
            tally.leave_out(why, n)
        tally.finish()
    return items, dropped, tally.read


def _records(section: Any) -> Iterator[tuple[str, int | None, Any]]:
    return iter_raw_records(section.data, section.split, section.name)
