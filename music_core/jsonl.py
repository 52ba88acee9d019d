"""JSONL in and out: readers that name the file and line of a bad record, and writers that
never leave a partial line behind (append-only with fsync, or whole-file atomic replace)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from .errors import RecordError

T = TypeVar("T")


def iter_json_lines(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, object)`` for every non-blank line; bad JSON names file and line."""
    path = Path(path)
    if not path.exists():
        raise RecordError(str(path), None, "file not found")
    with path.open("rb") as fh:  # bytes: a bad byte is reported at its line, not as a traceback
        for lineno, raw in enumerate(fh, start=1):
            line = decode_line(raw, path, lineno)
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise RecordError(str(path), lineno, f"invalid JSON ({exc.msg} at column {exc.colno})") from None


def decode_line(raw: bytes, path: str | os.PathLike, lineno: int | None) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(str(path), lineno, f"not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                          f"re-encode the file as UTF-8") from None


def read_text_utf8(path: str | os.PathLike) -> str:
    """A whole text file as UTF-8; a bad byte names the file and its line."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        lineno = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - data.rfind(b"\n", 0, exc.start)
        raise RecordError(str(path), lineno, f"not UTF-8 (byte 0x{data[exc.start]:02x} at column {column}); "
                          f"re-encode the file as UTF-8") from None


def read_records(path: str | os.PathLike, parse: Callable[[Any], T]) -> list[T]:
    """Read and validate every record before returning any: one bad line fails the whole file,
    so callers never act on half a dataset. ``parse`` raises ValueError for a bad record."""
    out: list[T] = []
    for lineno, obj in iter_json_lines(path):
        try:
            out.append(parse(obj))
        except (ValueError, TypeError, KeyError) as exc:
            raise RecordError(str(path), lineno, str(exc)) from None
    return out


def _dump(record: Any) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


def write_jsonl_atomic(path: str | os.PathLike, records: Iterable[Any]) -> int:
    """Write a whole file via a temporary sibling and ``os.replace``: readers see the old file
    or the complete new one, never a torn one. Returns the number of records."""
    return write_lines_atomic(path, (_dump(rec) for rec in records))


def write_lines_atomic(path: str | os.PathLike, lines: Iterable[str]) -> int:
    """Replace a file with these lines (each ending in a newline), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    n = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for line in lines:
                fh.write(line if line.endswith("\n") else line + "\n")
                n += 1
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cut_torn_tail(path: str | os.PathLike) -> int:
    """Cut a last line that has no newline: it can only come from a write that was killed
    midway. Returns the bytes removed (0 for a whole file)."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return 0
    with path.open("rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return 0
        # Walk back to the last newline and truncate after it.
        pos = size - 1
        chunk = 4096
        while pos > 0:
            start = max(0, pos - chunk)
            fh.seek(start)
            buf = fh.read(pos - start)
            idx = buf.rfind(b"\n")
            if idx >= 0:
                keep = start + idx + 1
                fh.truncate(keep)
                return size - keep
            pos = start
        fh.truncate(0)
        return size


def append_line(fh: Any, record: Any) -> None:
    """One whole line, flushed and fsynced: a kill leaves the record complete or absent."""
    fh.write(_dump(record))
    fh.flush()
    os.fsync(fh.fileno())


class AppendOnlyJsonl:
    """An append-only JSONL file that survives kills: each record is one ``write`` of a whole
    line followed by fsync, a torn tail left by a crash is cut off on open, and the ids already
    present are known so a resumed job skips them.

    >>> with AppendOnlyJsonl("pairs.jsonl") as out:
    ...     if "abc" not in out.done_ids:
    ...         out.append({"id": "abc", ...})
    """

    def __init__(self, path: str | os.PathLike, *, id_key: str = "id", fsync: bool = True,
                 counts: Callable[[dict[str, Any]], bool] | None = None):
        """``counts`` says which records mark their id as done (default: all); an id whose
        records do not count may be appended again."""
        self.path = Path(path)
        self.id_key = id_key
        self.fsync = fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.repaired_bytes = cut_torn_tail(self.path)
        self.done_ids: set[str] = set()
        if self.path.exists():
            for _, obj in iter_json_lines(self.path):
                if isinstance(obj, dict) and id_key in obj and (counts is None or counts(obj)):
                    self.done_ids.add(str(obj[id_key]))
        self._fh = self.path.open("a", encoding="utf-8")

    def append(self, record: dict[str, Any]) -> None:
        rid = str(record[self.id_key])
        if rid in self.done_ids:
            raise ValueError(f"{self.path}: id {rid!r} is already written")
        self._fh.write(_dump(record))
        self._fh.flush()
        if self.fsync:
            os.fsync(self._fh.fileno())
        self.done_ids.add(rid)

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> AppendOnlyJsonl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
