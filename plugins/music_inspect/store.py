"""The pairs behind the page, for files of any size: a JSONL file is indexed by line offsets at
start (no parsing, so the first page is ready at once) and parsed a line at a time when a pair
is asked for; the filters' summaries are built in a background thread. Other formats the readers
accept (Parquet, JSON, a hub snapshot) are read whole. A line that cannot be used (an empty user
turn, identical sides, ...) is skipped under the record rule: counted by reason and left out
of the lists; the rest is served."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from music_core import records
from music_core.data import PreferencePair, common_prefix_length
from music_core.errors import RecordError
from music_core.formats import load_pairs, pair_from_record
from music_core.jsonl import iter_json_lines
from music_core.records import ReadTally, RecordPolicy, UnusableRecord

FIRST_PAGE = 50


class PairStore:
    def __init__(self, path: str | Path, audit_path: Path | None = None, policy: RecordPolicy | None = None):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._parsed: dict[int, PreferencePair] = {}
        self._unusable: dict[int, UnusableRecord] = {}
        self._in_memory: list[PreferencePair] | None = None
        self.tally = ReadTally(str(self.path), policy or RecordPolicy())
        if self.path.suffix == ".jsonl":
            data = self.path.read_bytes()
            starts = [0]
            i = data.find(b"\n")
            while i != -1:
                starts.append(i + 1)
                i = data.find(b"\n", i + 1)
            ends = [s - 1 for s in starts[1:]] + [len(data)]
            # (offset, line number) of every line that holds something
            kept = [(off, n) for n, (off, end) in enumerate(zip(starts, ends), start=1) if data[off:end].strip()]
            self._offsets = [off for off, _ in kept]
            self._lines = [n for _, n in kept]
            self.count = len(self._offsets)
        else:
            with records.reading(str(self.path), self.tally.policy) as self.tally:
                self._in_memory = load_pairs(str(self.path))
            self.count = len(self._in_memory)
        if self.count == 0:
            raise RecordError(str(self.path), None, "holds no preference pairs")
        for i in range(min(self.count, FIRST_PAGE)):  # a bad file fails at start, naming file:line
            try:
                self.get(i)
            except UnusableRecord:
                pass  # counted; the page serves the rest
        self.audit = {str(r["id"]): r for _, r in iter_json_lines(audit_path)} if audit_path and audit_path.exists() else {}
        self.summaries: list[dict[str, Any]] | None = None
        self.error: str | None = None
        self.indexed = 0
        threading.Thread(target=self._index, daemon=True, name="inspect-index").start()

    def get(self, i: int) -> PreferencePair:
        if not 0 <= i < self.count:
            raise IndexError(i)
        if self._in_memory is not None:
            return self._in_memory[i]
        with self._lock:
            if i in self._parsed:
                return self._parsed[i]
        with self.path.open("rb") as fh:
            fh.seek(self._offsets[i])
            raw = fh.readline()
        line = self._lines[i]
        if i in self._unusable:
            raise self._unusable[i]
        try:
            record = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:  # not JSON: the file is not what it claims
            raise RecordError(str(self.path), line, str(exc)) from None
        try:
            pair = pair_from_record(record, "auto", source="pairs")
        except ValueError as exc:
            unusable = exc if isinstance(exc, UnusableRecord) else UnusableRecord("invalid", str(exc))
            with self._lock:
                if i not in self._unusable:
                    self._unusable[i] = unusable
                    self.tally.saw(str(self.path))
                    self.tally.skip(str(self.path), line, unusable, record)
            raise unusable from None
        with self._lock:
            if len(self._parsed) > 5000:  # a bounded cache: 30,000 parsed pairs would not fit comfortably
                self._parsed.clear()
            self._parsed[i] = pair
        return pair

    def summary(self, i: int, pair: PreferencePair) -> dict[str, Any]:
        meta = pair.meta if isinstance(pair.meta, dict) else {}
        audit = self.audit.get(pair.id) or {}
        turns = meta.get("num_turns") or sum(m["role"] == "assistant" for m in pair.chosen[common_prefix_length(pair.chosen, pair.rejected):])
        return {"index": i, "id": pair.id, "source": pair.source, "strategy": meta.get("strategy") or "original",
                "num_turns": int(turns or 1), "fallback": meta.get("made_by_fallback") or "none",
                "audit": audit.get("verdict") or "not audited",
                "text": " ".join(m["content"] for m in pair.chosen + pair.rejected).lower()}

    def nearest(self, i: int, step: int = 1) -> tuple[int, PreferencePair] | None:
        """The first usable pair at ``i`` or beyond it in the direction of ``step``."""
        while 0 <= i < self.count:
            try:
                return i, self.get(i)
            except UnusableRecord:
                i += step
        return None

    def usable(self, i: int) -> bool:
        try:
            self.get(i)
            return True
        except UnusableRecord:
            return False

    def skipped(self) -> dict[str, Any]:
        """What the page leaves out, and why (complete once the index is)."""
        return {"count": len(self._unusable), "by_reason": dict(self.tally.skipped.most_common()),
                "first": list(self.tally.examples), "complete": self.ready()}

    def _index(self) -> None:
        out = []
        try:
            for i in range(self.count):
                try:
                    out.append(self.summary(i, self.get(i)))
                except UnusableRecord:
                    pass
                self.indexed = i + 1
        except RecordError as exc:
            self.error = str(exc)
            return
        if self._in_memory is None:  # the budget: over it the page still serves, and says so
            self.tally.read, self.tally.kept = self.count, self.count - len(self._unusable)
            try:
                self.tally.finish()
            except RecordError as exc:
                self.error = str(exc)
        self.summaries = out
        self._parsed.clear()

    def ready(self) -> bool:
        return self.summaries is not None
