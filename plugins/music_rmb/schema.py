"""RMB's records, read in RMB's own schema (every file a JSON array) under the record rule.

Pairwise_set records: ``pair_uid``, ``conversation_input`` (turns ``{role, content, language?}``
ending with the user), ``chosen`` and ``reject`` (``{llm_name, answer}``), ``category_path``.
BoN_set records: ``bon_uid``, ``conversation_input``, ``bon_best``, ``loser_list`` (a list of
``{llm_name, answer}``), ``category_path``. Each becomes an :class:`Item`: the conversations to
score, the preferred one first. An empty answer is what a model said: it is scored. An empty user
turn, a non-text part, roles out of order, or a preferred answer equal to another (a pair that
cannot be scored) are skipped, counted by reason and named ``file[i]``.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from music_core import records
from music_core.data import Message, conversation_problems, merge_same_role, message
from music_core.errors import RecordError
from music_core.formats import LOCAL_SUFFIXES, iter_raw_records, text_of_parts
from music_core.records import UnusableRecord
from music_core.stats import turn_buckets

SET_FOLDERS = {"Pairwise_set": "pairwise", "BoN_set": "bon"}
SET_NAMES = {"pairwise": "pairwise", "bon": "Best-of-N"}
REQUIRED = {"pairwise": ("pair_uid", "conversation_input", "chosen", "reject"),
            "bon": ("bon_uid", "conversation_input", "bon_best", "loser_list")}
TURN_BUCKETS = turn_buckets()


@dataclass
class Item:
    uid: str                           # "pairwise/15089", "bon/1527": RMB's uid within its set
    set: str                           # pairwise | bon
    category: str                      # category_path below the set folder: "Helpfulness/Code/Documentation"
    conversations: list[list[Message]]  # the preferred one first (chosen, bon_best), then the others
    user_turns: int

    @property
    def goal(self) -> str:
        """RMB's top level: Helpfulness or Harmlessness."""
        return self.category.split("/")[0]

    @property
    def group(self) -> str:
        """The top two levels: "Helpfulness/Code", "Harmlessness/S1"."""
        return "/".join(self.category.split("/")[:2])


def data_files(data: str) -> list[Path]:
    path = Path(data).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(LOCAL_SUFFIXES))
        if not files:
            raise RecordError(str(path), None, "folder holds no RMB files (JSON arrays under Pairwise_set/, BoN_set/)")
        return files
    if not path.exists():
        raise RecordError(str(path), None, "file or folder not found (eval.rmb.data)")
    return [path]


def set_of_path(path: Path) -> str | None:
    """The set a file's folder names (Pairwise_set/..., BoN_set/...), None when it names neither."""
    return next((SET_FOLDERS[p] for p in reversed(path.parts) if p in SET_FOLDERS), None)


def set_of_record(rec: dict[str, Any], by_path: str | None) -> str | None:
    """The record's ``category_path`` decides; then its file's folder; then its keys."""
    path = rec.get("category_path")
    if isinstance(path, str) and path.split("/")[0] in SET_FOLDERS:
        return SET_FOLDERS[path.split("/")[0]]
    if by_path:
        return by_path
    return "bon" if "bon_best" in rec else "pairwise" if "chosen" in rec else None


def category_of(rec: dict[str, Any], file: Path) -> str:
    """``category_path`` without its set folder, or the file's path below the set folder."""
    path = rec.get("category_path")
    parts = path.strip("/").split("/") if isinstance(path, str) and path.strip("/") else []
    if not parts:
        file_parts = list(file.with_suffix("").parts)
        below = [i for i, p in enumerate(file_parts) if p in SET_FOLDERS]
        parts = file_parts[below[-1]:] if below else [file.stem]
    return "/".join(parts[1:] if parts[0] in SET_FOLDERS and len(parts) > 1 else parts)


def conversation_of(raw: Any) -> tuple[list[Message], int]:
    """``conversation_input`` as messages (``language`` dropped, typed text parts joined, same-role
    runs merged): the messages and the merges made."""
    if not isinstance(raw, list) or not raw:
        raise UnusableRecord("invalid", "conversation_input is not a non-empty list of turns")
    out: list[Message] = []
    for i, turn in enumerate(raw):
        if not isinstance(turn, dict) or "role" not in turn:
            raise UnusableRecord("invalid", f"conversation_input turn {i} has no role")
        content = turn.get("content")
        if content is None:
            raise UnusableRecord("missing_field", f"conversation_input turn {i} has no content")
        text = content if isinstance(content, str) else text_of_parts(content, text_only=True)
        if text is None:
            non_text = isinstance(content, list)
            raise UnusableRecord("non_text_part" if non_text else "invalid",
                                 f"conversation_input turn {i} has " + ("a non-text part" if non_text else "no text"))
        out.append(message(str(turn["role"]), text))
    merged, n = merge_same_role(out)
    if merged[-1]["role"] != "user":
        raise UnusableRecord("role_order", "conversation_input must end with a user turn")
    return merged, n


def answer_of(side: Any, column: str) -> str:
    answer = side.get("answer") if isinstance(side, dict) else None
    if answer is None:
        raise UnusableRecord("missing_field", f"{column} has no answer")
    text = answer if isinstance(answer, str) else text_of_parts(answer, text_only=True)
    if text is None:
        raise UnusableRecord("invalid", f"{column}.answer is not text")
    return text


def scored(context: list[Message], answer: str, column: str) -> list[Message]:
    """The conversation the RM scores: the context and the answer (empty answers included)."""
    conv = context + [message("assistant", answer)]
    problems = conversation_problems(conv, must_end_with="assistant", allow_empty_answers=True)
    if problems:
        raise UnusableRecord(problems[0][0], f"{column}: {problems[0][1]}")
    return conv


def parse(rec: dict[str, Any], kind: str, file: Path) -> tuple[Item, int]:
    """One record as an item (and the same-role merges it needed), or UnusableRecord."""
    context, merges = conversation_of(rec["conversation_input"])
    problems = conversation_problems(context, must_end_with="user")
    if problems:  # named once, as the data's own column, not per answer
        raise UnusableRecord(problems[0][0], f"conversation_input: {problems[0][1]}")
    if kind == "pairwise":
        uid, answers = rec["pair_uid"], [answer_of(rec["chosen"], "chosen"), answer_of(rec["reject"], "reject")]
        names = ["chosen", "reject"]
    else:
        losers = rec["loser_list"]
        if not isinstance(losers, list) or not losers:
            raise UnusableRecord("invalid", "loser_list is not a non-empty list")
        uid = rec["bon_uid"]
        names = ["bon_best"] + [f"loser_list[{k}]" for k in range(len(losers))]
        answers = [answer_of(rec["bon_best"], "bon_best")] + [answer_of(x, n) for x, n in zip(losers, names[1:])]
    if uid is None:
        raise UnusableRecord("missing_field", f"{REQUIRED[kind][0]} is null")
    convs = [scored(context, a, n) for a, n in zip(answers, names)]
    same = [n for a, n in zip(answers[1:], names[1:]) if a == answers[0]]
    if same:  # a pair the RM cannot order: r(x) > r(x) never holds
        raise UnusableRecord("identical_sides", f"{names[0]}'s answer is identical to {same[0]}'s")
    users = sum(m["role"] == "user" for m in context)
    return Item(f"{kind}/{uid}", kind, category_of(rec, file), convs, users), merges


def _rows(file: Path, allow_empty: bool) -> Iterator[tuple[str, int | None, Any]]:
    return iter_raw_records(str(file), "train", allow_empty=allow_empty)


def read(section: Any) -> tuple[list[Item], dict[str, int], list[str]]:
    """The selected sets' records of every file under ``section.data``. A file whose first record
    lacks a required column is an error naming it; files of a set not asked for are not read.
    Returns the items to score (``section.limit`` per set, a seeded sample), what the config left
    out, and the files read."""
    items: list[Item] = []
    left_out: Counter[str] = Counter()
    seen: dict[str, str] = {}
    read_files: list[str] = []
    files = data_files(str(section.data))
    with records.tally_for(str(section.data)) as tally:
        read_before = tally.read
        for file in files:
            by_path = set_of_path(file)
            if by_path and by_path not in section.sets:
                continue
            read_files.append(str(file))
            first = True
            for where, line, rec in _rows(file, allow_empty=len(files) > 1):  # a folder: empty when all are
                tally.saw(where)
                kind = (set_of_record(rec, by_path) if isinstance(rec, dict) else by_path) or "pairwise"
                missing = [c for c in REQUIRED[kind] if not isinstance(rec, dict) or c not in rec]
                if missing and first:
                    raise RecordError(where, line, f"missing required column {missing[0]!r} (RMB {SET_NAMES[kind]} "
                                                   f"records have {list(REQUIRED[kind])})")
                first = False
                if kind not in section.sets:
                    left_out[f"{SET_NAMES[kind]} records (not in eval.rmb.sets)"] += 1
                    continue
                try:
                    if missing:
                        raise UnusableRecord("missing_field", f"missing column {missing[0]!r}")
                    item, merges = parse(rec, kind, file)
                    if item.uid in seen:
                        raise UnusableRecord("duplicate_uid", f"{item.uid} was read before, at {seen[item.uid]}")
                except (ValueError, TypeError, KeyError) as exc:
                    tally.skip(where, line, exc if isinstance(exc, ValueError) else UnusableRecord("invalid", str(exc)), rec)
                    continue
                seen[item.uid] = where
                records.note_merged(merges)
                tally.kept += 1
                items.append(item)
        if read_files and tally.read == read_before:
            raise RecordError(str(section.data), None, "holds no records: nothing usable left")
        items = _limit(items, section, left_out)
        for why, n in left_out.items():
            tally.leave_out(why, n)
        tally.finish()
    return items, dict(left_out), read_files


def _limit(items: list[Item], section: Any, left_out: Counter[str]) -> list[Item]:
    if section.limit is None:
        return items
    keep: set[int] = set()
    for kind in SET_NAMES:
        idx = [i for i, it in enumerate(items) if it.set == kind]
        if len(idx) > section.limit:
            left_out[f"{SET_NAMES[kind]} items past eval.rmb.limit"] += len(idx) - section.limit
            idx = random.Random(section.seed).sample(idx, section.limit)
        keep.update(idx)
    return [it for i, it in enumerate(items) if i in keep]
