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


def conversation_errors(messages: Any, *, must_end_with: str | None = None) -> list[str]:
    """Every rule a conversation breaks, as readable sentences (empty list when valid).

    Rules: a non-empty list of ``{"role", "content"}`` objects with known roles and non-empty
    string content; at most one system message and only first; then user and assistant
    strictly alternate, starting with the user.
    """
    if not isinstance(messages, list) or not messages:
        return ["must be a non-empty list of messages"]
    errors: list[str] = []
    expected = "user"
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            errors.append(f"message {i} is not an object")
            continue
        role, content = msg.get("role"), msg.get("content")
        extra = set(msg) - {"role", "content"}
        if extra:
            errors.append(f"message {i} has unknown keys {sorted(extra)}")
        if role not in ROLES:
            errors.append(f"message {i} has unknown role {role!r} (expected one of {ROLES})")
            continue
        if not isinstance(content, str) or not content.strip():
            errors.append(f"message {i} ({role}) has empty or non-string content")
        if role == "system":
            if i != 0:
                errors.append(f"message {i} is a system message; only the first may be")
            continue
        if role != expected:
            errors.append(f"message {i} is {role!r} but {expected!r} was expected (turns alternate)")
        expected = "assistant" if role == "user" else "user"
    if must_end_with and not errors and messages[-1].get("role") != must_end_with:
        errors.append(f"must end with an {must_end_with} message")
    return errors


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

    def errors(self) -> list[str]:
        errs = []
        if not isinstance(self.id, str) or not self.id:
            errs.append("'id' must be a non-empty string")
        for side in ("chosen", "rejected"):
            errs += [f"{side}: {e}" for e in conversation_errors(getattr(self, side), must_end_with="assistant")]
        if errs:
            return errs
        # Both sides must grow from the same start: the system message (if any) and the first
        # user turn; otherwise the pair compares two different tasks.
        shared = first_user_index(self.chosen) + 1
        if common_prefix_length(self.chosen, self.rejected) < shared:
            errs.append("chosen and rejected do not start from the same prefix (first user turn differs)")
        elif self.chosen == self.rejected:
            errs.append("chosen and rejected are identical")
        if not isinstance(self.source, str):
            errs.append("'source' must be a string")
        if not isinstance(self.meta, dict):
            errs.append("'meta' must be an object")
        return errs

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "chosen": self.chosen, "rejected": self.rejected,
                "source": self.source, "meta": self.meta}

    @classmethod
    def from_dict(cls, record: Any) -> PreferencePair:
        """Build from a JSON object; raises ValueError with every problem found."""
        if not isinstance(record, dict):
            raise ValueError("record is not a JSON object")
        missing = [k for k in ("id", "chosen", "rejected") if k not in record]
        if missing:
            raise ValueError(f"missing keys {missing}")
        unknown = set(record) - set(cls.FIELDS)
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)} (allowed: {list(cls.FIELDS)})")
        pair = cls(id=record["id"], chosen=record["chosen"], rejected=record["rejected"],
                   source=record.get("source", "unknown"), meta=record.get("meta") or {})
        errs = pair.errors()
        if errs:
            raise ValueError("; ".join(errs))
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
