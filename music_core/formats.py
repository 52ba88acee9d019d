"""Readers for the public preference and conversation formats, and ``datasets`` conversion.

Formats:
- ``skywork`` / ``trl``: ``{"chosen": [messages], "rejected": [messages], ...}``; TRL's
  explicit-prompt variant ``{"prompt": [...], "chosen": [...], "rejected": [...]}`` too.
- ``sharegpt``: ``{"conversations": [{"from": "human"|"gpt"|"system", "value": str}]}``, with
  optional ``chosen``/``rejected`` final answers (the pairwise ShareGPT layout).
- ``messages``: ``{"id"?, "messages": [...]}`` plain conversations.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

from . import records
from .data import (
    Conversation,
    Message,
    PreferencePair,
    content_hash,
    conversation_problems,
    merge_same_role,
)
from .errors import MusicError, RecordError
from .jsonl import iter_json_lines, read_text_utf8
from .records import UnusableRecord

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bot": "assistant", "model": "assistant", "system": "system"}
LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet", ".jsonl.gz", ".json.gz")


def iter_raw_records(path_or_id: str, split: str = "train", name: str | None = None) -> Iterator[tuple[str, int | None, Any]]:
    """Yield ``(file, line, record)`` from a local JSONL/JSON/Parquet file (``.jsonl.gz`` and
    ``.json.gz`` too), a folder of them, an Arrow snapshot folder (``Dataset.save_to_disk``), or a
    Hugging Face hub id (through ``datasets``; ``name`` is the dataset's config, e.g.
    HelpSteer3's ``preference``). Line numbers exist for JSONL only."""
    path = Path(os.path.expanduser(path_or_id))
    if path.is_dir() and _is_arrow_snapshot(path):
        yield from _iter_arrow(path, split)
        return
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.name.endswith(LOCAL_SUFFIXES))
        if not files:
            raise RecordError(str(path), None, f"folder holds no {'/'.join(LOCAL_SUFFIXES)} files")
        # A hub snapshot keeps each split in its own files (data/filtered-00000-of-00001.parquet,
        # data/raw-...): read the configured split's files only, when the names say which.
        of_split = [f for f in files if split_of(f) == split]
        if of_split:
            files = of_split
        elif any(split_of(f) for f in files):
            found = sorted({s for f in files if (s := split_of(f))})
            raise RecordError(str(path), None, f"no files of split {split!r} (the folder has splits {found})")
        for f in files:
            yield from iter_raw_records(str(f), split)
        return
    if path.name.endswith(".gz") and path.exists():
        yield from _iter_gzip(path)
        return
    if path.suffix == ".jsonl" or (path.exists() and path.suffix not in (".json", ".parquet")):
        for lineno, obj in iter_json_lines(path):
            yield str(path), lineno, obj
        return
    if path.exists():
        import json

        if path.suffix == ".json":
            try:
                data = json.loads(read_text_utf8(path))
            except json.JSONDecodeError as exc:
                raise RecordError(str(path), exc.lineno, f"invalid JSON ({exc.msg})") from None
            rows = data if isinstance(data, list) else data.get("data", data.get(split, None))
            if not isinstance(rows, list):
                raise RecordError(str(path), None, "expected a JSON list of records")
            for i, row in enumerate(rows):
                yield f"{path}[{i}]", None, row
            return
        import datasets

        ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
        for i, row in enumerate(ds):
            yield f"{path}[{i}]", None, row
        return
    if path.name.endswith(LOCAL_SUFFIXES) or path_or_id.startswith((".", "/", "~")):
        raise RecordError(str(path), None, "file not found")
    yield from _iter_hub(path_or_id, split, name)


def _iter_gzip(path: Path) -> Iterator[tuple[str, int | None, Any]]:
    """A gzipped JSONL file (one record a line) or JSON file (a list of records)."""
    import gzip
    import json

    try:
        text = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as exc:
        raise RecordError(str(path), None, f"not a readable gzip file ({exc})") from None
    lines = text.split(b"\n")
    if path.name.endswith(".json.gz"):
        try:
            data = json.loads(text.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RecordError(str(path), getattr(exc, "lineno", None), f"invalid JSON ({exc})") from None
        rows = data if isinstance(data, list) else None
        if rows is None:
            raise RecordError(str(path), None, "expected a JSON list of records")
        for i, row in enumerate(rows):
            yield f"{path}[{i}]", None, row
        return
    for lineno, raw in enumerate(lines, start=1):
        line = raw.decode("utf-8", errors="strict") if raw else ""
        if not line.strip():
            continue
        try:
            yield str(path), lineno, json.loads(line)
        except json.JSONDecodeError as exc:
            raise RecordError(str(path), lineno, f"invalid JSON ({exc.msg} at column {exc.colno})") from None


def _is_arrow_snapshot(path: Path) -> bool:
    return (path / "dataset_dict.json").exists() or ((path / "state.json").exists() and any(path.glob("*.arrow")))


def _iter_arrow(path: Path, split: str) -> Iterator[tuple[str, int | None, Any]]:
    """A folder written by ``Dataset.save_to_disk`` (or ``DatasetDict.save_to_disk``: the split's)."""
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise RecordError(str(path), None, f"no split {split!r} in this snapshot (it has {sorted(ds)})")
        ds = ds[split]
    for i, row in enumerate(ds):
        yield f"{path}[{i}]", None, row


def split_of(file: Path) -> str | None:
    """The split a snapshot file belongs to, by the hub's naming (``<split>-00000-of-00001``,
    ``<split>.jsonl``), or None when the name does not say."""
    import re

    m = re.match(r"^([A-Za-z0-9_]+?)(-\d{5}-of-\d{5})?$", file.stem)
    if m and m.group(2):
        return m.group(1)
    return None


def _iter_hub(hub_id: str, split: str, name: str | None = None) -> Iterator[tuple[str, int | None, Any]]:
    import datasets

    try:
        ds = datasets.load_dataset(hub_id, name, split=split)
    except Exception as exc:  # offline, unknown id, gated: say which and how to fix it
        raise MusicError(
            f"could not load dataset {hub_id!r} (split {split!r}) from the hub: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}. Offline? Pass a local file or folder path instead."
        ) from None
    for i, row in enumerate(ds):
        yield f"{hub_id}[{split}][{i}]", None, row


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


T = TypeVar("T")


def read_each(path_or_id: str, parse: Callable[[Any], T | None], split: str = "train", name: str | None = None,
              label: str = "") -> list[T]:
    """Every record of a file, folder or hub dataset through ``parse``, under the record rule
    (:mod:`music_core.records`): a record ``parse`` rejects (ValueError) is skipped and counted in
    the enclosing reading scope, ``None`` leaves one out silently on purpose; a file problem, or a
    first record that lacks a required field, is an error naming the file."""
    out: list[T] = []
    with records.tally_for(label or path_or_id) as tally:
        first_of_file: set[str] = set()
        for where, line, rec in iter_raw_records(path_or_id, split, name):
            tally.saw(where)
            file = where.split("[", 1)[0]
            first = file not in first_of_file
            first_of_file.add(file)
            try:
                item = parse(rec)
            except ValueError as exc:
                if first and records.reason_of(exc) == "missing_field":
                    raise RecordError(where, line, f"{exc}: a required column is missing from the file's first "
                                                   f"record (is this the right format?)") from None
                tally.skip(where, line, exc, rec)
                continue
            if item is not None:
                tally.kept += 1
                out.append(item)
        tally.finish()  # the budget, before anything is spent on what was read
    return out


def load_pairs(path_or_id: str, fmt: str = "auto", split: str = "train", source: str = "original") -> list[PreferencePair]:
    """All usable pairs of a file, folder or hub dataset (skips counted in the reading scope)."""
    return read_each(path_or_id, lambda rec: pair_from_record(rec, fmt, source), split)


def load_conversations(path_or_id: str, fmt: str = "auto", split: str = "train", source: str = "seed") -> list[Conversation]:
    return read_each(path_or_id, lambda rec: conversation_from_record(rec, fmt, source), split)


def pairs_to_dataset(pairs: list[PreferencePair]):
    """A ``datasets.Dataset`` with TRL's conversational preference columns (plus id/source/meta
    as a JSON string, since per-record meta schemas differ)."""
    import json

    import datasets

    return datasets.Dataset.from_dict({
        "id": [p.id for p in pairs],
        "chosen": [p.chosen for p in pairs],
        "rejected": [p.rejected for p in pairs],
        "source": [p.source for p in pairs],
        "meta": [json.dumps(p.meta, ensure_ascii=False) for p in pairs],
    })


def dataset_to_pairs(ds) -> list[PreferencePair]:
    import json

    pairs = []
    for i, row in enumerate(ds):
        row = dict(row)
        if isinstance(row.get("meta"), str):
            row["meta"] = json.loads(row["meta"]) if row["meta"] else {}
        try:
            pairs.append(pair_from_record(row, "trl", row.get("source") or "dataset"))
        except ValueError as exc:
            raise RecordError(f"dataset[{i}]", None, str(exc)) from None
    return pairs
