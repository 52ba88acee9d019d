"""Readers for the public preference and conversation formats, and ``datasets`` conversion.

Formats:
- ``skywork`` / ``trl``: ``{"chosen": [messages], "rejected": [messages], ...}``; TRL's
  explicit-prompt variant ``{"prompt": [...], "chosen": [...], "rejected": [...]}`` too.
- ``sharegpt``: ``{"conversations": [{"from": "human"|"gpt"|"system", "value": str}]}``, with
  optional ``chosen``/``rejected`` final answers (the pairwise ShareGPT layout).
- ``messages``: ``{"id"?, "messages": [...]}`` plain conversations.

This module reads whole files, folders or hub datasets under the record rule and converts to
and from ``datasets``. Finding the raw records is :mod:`music_core.raw_records`; parsing one
record of a format is :mod:`music_core.format_parsers`; both are re-exported here, where the
plugins and tests import them from.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from . import records
from .data import Conversation, PreferencePair
from .errors import RecordError
from .format_parsers import (
    SHAREGPT_ROLES,
    conversation_from_record,
    pair_from_record,
    parse_transcript,
    text_of_parts,
)
from .raw_records import LOCAL_SUFFIXES, iter_raw_records, split_of

__all__ = [
    "LOCAL_SUFFIXES", "SHAREGPT_ROLES", "conversation_from_record", "dataset_to_pairs", "iter_raw_records",
    "load_conversations", "load_pairs", "pair_from_record", "pairs_to_dataset", "parse_transcript", "read_each",
    "split_of", "text_of_parts",
]

T = TypeVar("T")


def read_each(path_or_id: str, parse: Callable[[Any], T | None], split: str = "train", name: str | None = None,
              label: str = "", *, allow_empty: bool = False) -> list[T]:
    """Every record of a file, folder or hub dataset through ``parse``, under the record rule
    (:mod:`music_core.records`): a record ``parse`` rejects (ValueError) is skipped and counted in
    the enclosing reading scope, ``None`` leaves one out silently on purpose; a file problem, or a
    first record that lacks a required field, is an error naming the file, and so is a file with
    no record at all unless ``allow_empty`` (a run's own file that may rightly be empty)."""
    out: list[T] = []
    with records.tally_for(label or path_or_id) as tally:
        first_of_file: set[str] = set()
        for where, line, rec in iter_raw_records(path_or_id, split, name, allow_empty=allow_empty):
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


def load_pairs(path_or_id: str, fmt: str = "auto", split: str = "train", source: str = "original", *,
               allow_empty: bool = False) -> list[PreferencePair]:
    """All usable pairs of a file, folder or hub dataset (skips counted in the reading scope)."""
    return read_each(path_or_id, lambda rec: pair_from_record(rec, fmt, source), split, allow_empty=allow_empty)


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
