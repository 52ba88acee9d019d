"""The data model: messages, conversations and preference pairs, with validation.

Messages are plain dicts (``{"role", "content"}``) so that records round-trip through JSON,
``datasets`` and TRL unchanged; this module owns the rules they must follow.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

ROLES = ("system", "user", "assistant")


class Message(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


def message(role: str, content: str) -> Message:
    return {"role": role, "content": content}  # type: ignore[typeddict-item]


def conversation_problems(messages: Any, *, must_end_with: str | None = None,
                          allow_empty_answers: bool = False) -> list[tuple[str, str]]:
    """Every rule a conversation breaks, as ``(reason, sentence)`` (reasons: those of
    :data:`music_core.records.REASONS`, plus ``empty_answer``).

    Rules: a non-empty list of ``{"role", "content"}`` objects with known roles and string
    content; user turns not empty; assistant turns not empty unless ``allow_empty_answers`` (an
    empty answer that people judged is data, to be scored); at most one system message and only
    first; then user and assistant strictly alternate, starting with the user.
    """
    if not isinstance(messages, list) or not messages:
        return [("invalid", "must be a non-empty list of messages")]
    problems: list[tuple[str, str]] = []
    expected = "user"
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            problems.append(("invalid", f"message {i} is not an object"))
            continue
        role, content = msg.get("role"), msg.get("content")
        extra = set(msg) - {"role", "content"}
        if extra:
            problems.append(("invalid", f"message {i} has unknown keys {sorted(extra)}"))
        if role not in ROLES:
            problems.append(("invalid", f"message {i} has unknown role {role!r} (expected one of {ROLES})"))
            continue
        if not isinstance(content, str):
            problems.append(("invalid", f"message {i} ({role}) has empty or non-string content"))
        elif not content.strip() and role == "user":
            problems.append(("empty_user_turn", f"message {i} (user) has empty or non-string content"))
        elif not content.strip() and role == "assistant" and not allow_empty_answers:
            problems.append(("empty_answer", f"message {i} (assistant) has empty or non-string content"))
        if role == "system":
            if i != 0:
                problems.append(("role_order", f"message {i} is a system message; only the first may be"))
            continue
        if role != expected:
            problems.append(("role_order", f"message {i} is {role!r} but {expected!r} was expected (turns alternate)"))
        expected = "assistant" if role == "user" else "user"
    if must_end_with and not problems and messages[-1].get("role") != must_end_with:
        problems.append(("role_order", f"must end with an {must_end_with} message"))
    return problems


def conversation_errors(messages: Any, *, must_end_with: str | None = None,
                        allow_empty_answers: bool = False) -> list[str]:
    """:func:`conversation_problems` as readable sentences (empty list when valid)."""
    return [text for _, text in conversation_problems(messages, must_end_with=must_end_with,
                                                      allow_empty_answers=allow_empty_answers)]


def merge_same_role(messages: list[Message]) -> tuple[list[Message], int]:
    """Consecutive user (or assistant) messages joined into one, as HH transcripts and chat logs
    need: a run of two is one speaker who pressed enter twice. Returns the messages and the
    number of merges."""
    out: list[Message] = []
    merges = 0
    for m in messages:
        prev = out[-1] if out else None
        if (prev is not None and isinstance(m, dict) and m.get("role") in ("user", "assistant")
                and prev.get("role") == m.get("role") and isinstance(prev.get("content"), str)
                and isinstance(m.get("content"), str)):
            joined = "\n\n".join(t for t in (prev["content"], m["content"]) if t.strip())
            out[-1] = message(prev["role"], joined)
            merges += 1
        else:
            out.append(m)
    return out, merges


def common_prefix_length(a: list[Message], b: list[Message]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def first_user_index(messages: list[Message]) -> int:
    return 1 if messages and messages[0]["role"] == "system" else 0


def content_hash(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts (ids, dedupe keys)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class PreferencePair:
    """One pair in the conversational preference format that TRL and the Skywork sets use."""

    id: str
    chosen: list[Message]
    rejected: list[Message]
    source: str = "unknown"
    meta: dict[str, Any] = field(default_factory=dict)

    FIELDS = ("id", "chosen", "rejected", "source", "meta")

    def problems(self, *, allow_empty_answers: bool = False) -> list[tuple[str, str]]:
        """Every rule the pair breaks, as ``(reason, sentence)``."""
        probs: list[tuple[str, str]] = []
        if not isinstance(self.id, str) or not self.id:
            probs.append(("invalid", "'id' must be a non-empty string"))
        for side in ("chosen", "rejected"):
            probs += [(r, f"{side}: {e}") for r, e in conversation_problems(
                getattr(self, side), must_end_with="assistant", allow_empty_answers=allow_empty_answers)]
        if probs:
            return probs
        # Both sides must grow from the same start: the system message (if any) and the first
        # user turn; otherwise the pair compares two different tasks.
        shared = first_user_index(self.chosen) + 1
        if common_prefix_length(self.chosen, self.rejected) < shared:
            probs.append(("different_prompt", "chosen and rejected do not start from the same prefix "
                                              "(first user turn differs)"))
        elif self.chosen == self.rejected:
            probs.append(("identical_sides", "chosen and rejected are identical"))
        if not isinstance(self.source, str):
            probs.append(("invalid", "'source' must be a string"))
        if not isinstance(self.meta, dict):
            probs.append(("invalid", "'meta' must be an object"))
        return probs

    def errors(self, *, allow_empty_answers: bool = False) -> list[str]:
        return [text for _, text in self.problems(allow_empty_answers=allow_empty_answers)]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "chosen": self.chosen, "rejected": self.rejected,
                "source": self.source, "meta": self.meta}

    @classmethod
    def from_dict(cls, record: Any) -> PreferencePair:
        """Build from a JSON object; raises ValueError with every problem found."""
        if not isinstance(record, dict):
            raise ValueError("record is not a JSON object")
        from .records import UnusableRecord

        missing = [k for k in ("id", "chosen", "rejected") if k not in record]
        if missing:
            raise UnusableRecord("missing_field", f"missing keys {missing}")
        unknown = set(record) - set(cls.FIELDS)
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)} (allowed: {list(cls.FIELDS)})")
        pair = cls(id=record["id"], chosen=record["chosen"], rejected=record["rejected"],
                   source=record.get("source", "unknown"), meta=record.get("meta") or {})
        problems = pair.problems(allow_empty_answers=True)  # an empty answer is data; synthesis checks its own
        if problems:
            raise UnusableRecord(problems[0][0], "; ".join(text for _, text in problems))
        return pair

    def dedupe_key(self) -> str:
        return content_hash(self.chosen, self.rejected)


@dataclass
class Conversation:
    """A plain multi-turn conversation (a seed, a prompt or a Best-of-N transcript)."""

    id: str
    messages: list[Message]
    source: str = "unknown"
    meta: dict[str, Any] = field(default_factory=dict)

    def errors(self) -> list[str]:
        errs = [] if isinstance(self.id, str) and self.id else ["'id' must be a non-empty string"]
        return errs + conversation_errors(self.messages)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "messages": self.messages, "source": self.source, "meta": self.meta}
