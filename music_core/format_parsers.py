"""One record of a public preference or conversation format, as a :class:`PreferencePair` or a
:class:`Conversation`: the formats' own layouts (listed in :mod:`music_core.formats`),
Anthropic HH transcripts and content given as a list of parts.

A record that cannot be used raises :class:`UnusableRecord` naming the reason; counting and
skipping it is the reader's business (:func:`music_core.formats.read_each`), which is why the
parsers live apart from the reading.
"""

from __future__ import annotations

import re
from typing import Any, cast

from . import records
from .data import (
    Conversation,
    Message,
    PreferencePair,
    content_hash,
    conversation_problems,
    merge_same_role,
)
from .records import UnusableRecord

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bot": "assistant", "model": "assistant", "system": "system"}

_HH_TURN = re.compile(r"\n\n(Human|Assistant): ?")


def _is_transcript(raw: Any) -> bool:
    """An Anthropic HH side: one string with Human:/Assistant: turns."""
    return isinstance(raw, str) and "Human:" in raw and "Assistant:" in raw


def parse_transcript(text: str) -> list[Message]:
    """An Anthropic HH transcript (``\\n\\nHuman: ...\\n\\nAssistant: ...``) as messages.
    Empty turns stay (the checks decide what they mean); doubled turns are merged and counted."""
    if not isinstance(text, str) or "Human:" not in text:
        raise UnusableRecord("invalid", "not an HH transcript (no 'Human:' turn)")
    parts = _HH_TURN.split(text if text.startswith("\n\n") else "\n\n" + text.lstrip("\n"))
    msgs = [cast(Message, {"role": "user" if who == "Human" else "assistant", "content": body.strip()})
            for who, body in zip(parts[1::2], parts[2::2])]
    return _merged(msgs)


def _merged(msgs: list[Message]) -> list[Message]:
    out, merges = merge_same_role(msgs)
    records.note_merged(merges)
    return out


def _clean_messages(raw: Any) -> list[Message]:
    if _is_transcript(raw):
        return parse_transcript(raw)
    if not isinstance(raw, list):
        raise UnusableRecord("invalid", "messages must be a list")
    out: list[Message] = []
    for m in raw:
        if not isinstance(m, dict):
            raise UnusableRecord("invalid", "a message is not an object")
        role = m.get("role", m.get("from"))
        role = SHAREGPT_ROLES.get(role.lower(), role) if isinstance(role, str) else role
        content = m.get("content", m.get("value"))
        if isinstance(content, list):
            text = text_of_parts(content, text_only=True)
            if text is None:
                raise UnusableRecord("non_text_part", f"a {role} message has a non-text content part "
                                                      f"({_part_types(content)})")
            content = text
        out.append(cast(Message, {"role": role, "content": content}))
    return _merged(out)


def _part_types(content: list[Any]) -> str:
    return ", ".join(sorted({str(p.get("type", "?")) if isinstance(p, dict) else type(p).__name__ for p in content}))


def text_of_parts(content: Any, *, text_only: bool = False) -> str | None:
    """The text of a message's content given as a list of parts (``[{"type": "text", "text": ...}]``,
    the multimodal chat layout of datasets and of some servers' answers): its text parts joined;
    None when it is not such a list or holds no text part. ``text_only``: None as well when a
    part is not text (an image in a dataset is something the reward model would not see)."""
    if not isinstance(content, list) or not all(isinstance(p, dict) for p in content):
        return None
    if text_only and any(p.get("type", "text") != "text" for p in content):
        return None
    texts = [p.get("text") for p in content if p.get("type", "text") == "text"]
    return "".join(texts) if texts and all(isinstance(t, str) for t in texts) else None


def _side(raw: Any, prompt: list[Message]) -> list[Message]:
    """One side of a pair with its prompt: TRL's explicit-prompt layout gives the completion
    alone (messages, or a string in the standard format); many sets (UltraFeedback binarized,
    HelpSteer2's preference layout) give a ``prompt`` and sides that already start with it."""
    if isinstance(raw, str) and prompt and not _is_transcript(raw):
        return prompt + [cast(Message, {"role": "assistant", "content": raw})]
    side = _clean_messages(raw)
    return side if side[: len(prompt)] == prompt else prompt + side


def _checked(pair: PreferencePair) -> PreferencePair:
    problems = pair.problems(allow_empty_answers=True)  # an empty answer people judged is data
    if problems:
        raise UnusableRecord(problems[0][0], "; ".join(text for _, text in problems))
    return pair


def pair_from_record(record: Any, fmt: str = "auto", source: str = "original") -> PreferencePair:
    """Normalise one record of a known preference format (Anthropic HH transcripts included);
    raises :class:`UnusableRecord` (a ValueError) naming the reason."""
    if not isinstance(record, dict):
        raise UnusableRecord("invalid", "record is not a JSON object")
    if fmt == "auto":
        fmt = "sharegpt" if "conversations" in record else "trl"
    if fmt == "music":
        return PreferencePair.from_dict(record)
    if fmt in ("skywork", "trl"):
        if record.get("chosen") is None or record.get("rejected") is None:
            raise UnusableRecord("missing_field", "missing 'chosen' or 'rejected'")
        prompt: list[Message] = []
        if record.get("prompt"):  # TRL's explicit prompt
            raw = record["prompt"]
            prompt = [cast(Message, {"role": "user", "content": raw})] if isinstance(raw, str) else _clean_messages(raw)
        chosen, rejected = _side(record["chosen"], prompt), _side(record["rejected"], prompt)
    elif fmt == "sharegpt":
        turns = [_sharegpt_message(t) for t in record.get("conversations") or []]
        if record.get("chosen") is None or record.get("rejected") is None:
            raise UnusableRecord("missing_field", "ShareGPT pair needs 'chosen' and 'rejected' final answers")
        chosen = _merged(turns + [_sharegpt_message(record["chosen"], default_role="assistant")])
        rejected = _merged(turns + [_sharegpt_message(record["rejected"], default_role="assistant")])
    else:
        raise ValueError(f"unknown preference format {fmt!r} (known: auto, music, skywork, trl, sharegpt)")
    meta = dict(record.get("meta") or {})
    return _checked(PreferencePair(
        id=str(record.get("id") or content_hash(chosen, rejected)),
        chosen=chosen, rejected=rejected,
        source=str(record.get("source") or source), meta=meta,
    ))


def _sharegpt_message(turn: Any, default_role: str | None = None) -> Message:
    if isinstance(turn, str) and default_role:
        return {"role": default_role, "content": turn}  # type: ignore[typeddict-item]
    if not isinstance(turn, dict):
        raise UnusableRecord("invalid", "a ShareGPT turn is not an object")
    who = str(turn.get("from", turn.get("role", default_role or ""))).lower()
    if who not in SHAREGPT_ROLES:
        raise UnusableRecord("invalid", f"unknown ShareGPT speaker {who!r}")
    return {"role": SHAREGPT_ROLES[who], "content": turn.get("value", turn.get("content"))}  # type: ignore[typeddict-item]


def conversation_from_record(record: Any, fmt: str = "auto", source: str = "seed") -> Conversation:
    """A conversation from a seed record: plain messages, ShareGPT, or a preference pair (its
    chosen side, which is what the paper's seeds are cut from)."""
    if not isinstance(record, dict):
        raise UnusableRecord("invalid", "record is not a JSON object")
    if fmt == "auto":
        fmt = ("messages" if "messages" in record else "sharegpt" if "conversations" in record
               else "skywork" if "chosen" in record else "")
        if not fmt:
            raise UnusableRecord("missing_field", "cannot tell the format: expected 'messages', 'conversations' or 'chosen'")
    if fmt == "messages":
        messages = _clean_messages(record.get("messages"))
    elif fmt == "sharegpt":
        messages = _merged([_sharegpt_message(t) for t in record.get("conversations") or []])
    elif fmt in ("skywork", "trl", "music"):
        messages = pair_from_record(record, "trl").chosen
    else:
        raise ValueError(f"unknown conversation format {fmt!r} (known: auto, messages, sharegpt, skywork, trl)")
    problems = conversation_problems(messages, allow_empty_answers=True)
    if problems:
        raise UnusableRecord(problems[0][0], "; ".join(text for _, text in problems))
    return Conversation(id=str(record.get("id") or content_hash(messages)), messages=messages,
                        source=str(record.get("source") or source), meta=dict(record.get("meta") or {}))
