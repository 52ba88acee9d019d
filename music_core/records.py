"""The rule for records in real data: a bad *file* is an error; a bad *record* is skipped, counted.

Public preference sets have empty user turns, identical sides, same-role runs and image parts.
One such record must not stop a run (datasets #5827, TRL #2087), and none may vanish without a
count (TRL #467). So every reader runs inside a *reading scope* whose :class:`ReadTally` counts
what was read, kept, skipped (by reason, the first few named ``file:line``) and merged:

>>> with records.reading("eval/pairwise", policy) as tally:
...     pairs = load_pairs(path)          # any reader, bundled or a plugin's, counts into tally
>>> tally.summary()                       # read/kept/skipped/merged for the report

A reader skips a record by raising :class:`UnusableRecord` (any ``ValueError`` from a record
parser counts as one, reason ``invalid``). Past ``max_invalid_fraction`` the scope ends with an
error naming the totals; ``strict`` stops at the first skip; a file with nothing usable left
is an error. The scope is a context variable, so the seed-source and evaluator contracts keep
their signatures and a third-party reader counts the same way.
"""

from __future__ import annotations

import contextvars
import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import RecordError

# Reason codes and what they mean, for reports and the README.
REASONS = {
    "empty_user_turn": "an empty or whitespace user turn",
    "identical_sides": "chosen identical to rejected",
    "role_order": "roles in an impossible order",
    "non_text_part": "a non-text content part",
    "different_prompt": "the two sides answer different prompts",
    "missing_field": "a required field missing or null",
    "invalid": "a value the reader cannot use",
}
EXAMPLES_KEPT = 5


class UnusableRecord(ValueError):
    """A well-formed record that cannot be used; ``reason`` is a key of :data:`REASONS` (or a
    reader's own short code)."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(detail or REASONS.get(reason, reason))
        self.reason = reason


def reason_of(exc: BaseException) -> str:
    return exc.reason if isinstance(exc, UnusableRecord) else "invalid"


@dataclass
class RecordPolicy:
    max_invalid_fraction: float = 0.05
    strict: bool = False

    @classmethod
    def of(cls, cfg: Any) -> RecordPolicy:
        """From the config's ``records`` section (or defaults when there is none)."""
        section = getattr(cfg, "records", None)
        if section is None:
            return cls()
        return cls(float(section.max_invalid_fraction), bool(section.strict))


@dataclass
class ReadTally:
    """What one scope read: records read, kept, skipped by reason, same-role turns merged, and
    records left out on purpose (a filter the config asked for, not a fault of the data)."""

    label: str
    policy: RecordPolicy = field(default_factory=RecordPolicy)
    read: int = 0
    kept: int = 0
    merged: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    filtered: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    side: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def saw(self, where: str) -> None:
        """A record was read from ``where`` (a file, or ``file[i]``)."""
        self.read += 1
        file = where.split("[", 1)[0]
        if file not in self.files:
            self.files.append(file)

    def skip(self, where: str, line: int | None, exc: BaseException, record: Any = None) -> None:
        """Count an unusable record; under ``strict`` it stops the read at once."""
        reason, at = reason_of(exc), f"{where}:{line}" if line is not None else where
        if self.policy.strict:
            raise RecordError(where, line, f"{exc} (records.strict: stopping at the first unusable record)")
        self.skipped[reason] += 1
        if len(self.examples) < EXAMPLES_KEPT:
            self.examples.append(f"{at}: {exc}")
        self.side.append({"where": at, "reason": reason, "detail": str(exc), "record": _jsonable(record)})

    def leave_out(self, why: str, n: int = 1) -> None:
        """Records the configuration leaves out (a judge not asked for, past a limit)."""
        self.filtered[why] += n

    def finish(self) -> None:
        """The budget and "nothing usable left", as file errors naming the totals."""
        where = ", ".join(self.files) or self.label
        if self.read and not self.kept and not self.filtered:
            raise RecordError(where, None, f"nothing usable left: {self.read} records read, all skipped "
                                           f"({self.describe_skips()}); first: {self.examples[0] if self.examples else '-'}")
        if self.read and self.n_skipped / self.read > self.policy.max_invalid_fraction:
            raise RecordError(where, None, f"{self.n_skipped} of {self.read} records unusable "
                                           f"({self.n_skipped / self.read:.1%}, over records.max_invalid_fraction="
                                           f"{self.policy.max_invalid_fraction}): {self.describe_skips()}; first: "
                                           f"{'; '.join(self.examples[:3])}")

    def describe_skips(self) -> str:
        return ", ".join(f"{REASONS.get(k, k)} {v}" for k, v in self.skipped.most_common()) or "none"

    def summary(self) -> dict[str, Any]:
        return {"read": self.read, "kept": self.kept, "skipped": self.n_skipped,
                "skipped_by_reason": dict(self.skipped.most_common()), "merged_same_role_turns": self.merged,
                "left_out": dict(self.filtered), "first_skipped": list(self.examples), "files": list(self.files)}

    def describe(self) -> str:
        """One sentence for a report: what was read, kept, skipped and merged."""
        return describe_read(self.summary())

    def write_side_file(self, path: str | Path) -> Path | None:
        """Every skipped record, one JSON line each (where, reason, detail, the record); none: no file."""
        from .jsonl import write_jsonl_atomic

        path = Path(path)
        if not self.side:
            path.unlink(missing_ok=True)  # a rerun that skips nothing leaves no stale list behind
            return None
        write_jsonl_atomic(path, self.side)
        return path


def describe_read(read: dict[str, Any]) -> str:
    """A :meth:`ReadTally.summary` in words: 'read N records, kept K; skipped S (reasons; first
    at file:line); left out by the config ...; M runs of same-role turns merged'."""
    text = f"read {read['read']} records, kept {read['kept']}; skipped {read['skipped']}"
    if read["skipped"]:
        reasons = ", ".join(f"{REASONS.get(k, k)} {v}" for k, v in read["skipped_by_reason"].items())
        text += f" ({reasons}; first: {'; '.join(read['first_skipped'][:3])})"
    if read.get("left_out"):
        text += "; left out by the config: " + ", ".join(f"{k} {v}" for k, v in read["left_out"].items())
    if read.get("merged_same_role_turns"):
        text += f"; {read['merged_same_role_turns']} runs of same-role turns merged"
    return text


def _jsonable(record: Any) -> Any:
    try:
        json.dumps(record, ensure_ascii=False)
        return record
    except (TypeError, ValueError):
        return repr(record)[:2000]


_current: contextvars.ContextVar[ReadTally | None] = contextvars.ContextVar("music_read_tally", default=None)


@contextmanager
def reading(label: str, policy: RecordPolicy | None = None, *, check: bool = True) -> Iterator[ReadTally]:
    """A scope whose readers count into one tally; on leaving, the budget is checked (``check``)."""
    tally = ReadTally(label, policy or RecordPolicy())
    token = _current.set(tally)
    try:
        yield tally
    finally:
        _current.reset(token)
    if check:
        tally.finish()


@contextmanager
def tally_for(label: str) -> Iterator[ReadTally]:
    """The enclosing scope's tally, or (outside any scope) a scope of its own with the default
    policy, so a reader called alone still enforces the budget."""
    outer = _current.get()
    if outer is not None:
        yield outer
        return
    with reading(label) as tally:
        yield tally


def current() -> ReadTally | None:
    return _current.get()


def note_merged(n: int) -> None:
    """Same-role turns merged by a reader (counted in the enclosing scope, if any)."""
    tally = _current.get()
    if tally is not None and n:
        tally.merged += n
