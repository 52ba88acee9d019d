"""The pairs behind the page, for files of any size: a JSONL file is indexed by line offsets at
start (no parsing, so the first page is ready at once) and parsed a line at a time when a pair
is asked for; the filters' summaries are built in a background thread. Other formats the readers
accept (Parquet, JSON, a hub snapshot) are read whole."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from music_core.data import PreferencePair, common_prefix_length
from music_core.errors import RecordError
from music_core.formats import load_pairs, pair_from_record
from music_core.jsonl import iter_json_lines

FIRST_PAGE = 50


class PairStore:
    def __init__(self, path: str | Path, audit_path: Path | None = None):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._parsed: dict[int, PreferencePair] = {}
        self._in_memory: list[PreferencePair] | None = None
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
            self._in_memory = load_pairs(str(self.path))
            self.count = len(self._in_memory)
        if self.count == 0:
            raise RecordError(str(self.path), None, "holds no preference pairs")
        for i in range(min(self.count, FIRST_PAGE)):  # a broken first page fails at start, naming file:line
            self.get(i)
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
        try:
            pair = pair_from_record(json.loads(raw.decode("utf-8")), "auto", source="pairs")
        except (ValueError, UnicodeDecodeError) as exc:
            raise RecordError(str(self.path), line, str(exc)) from None
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

    def _index(self) -> None:
        out = []
        try:
            for i in range(self.count):
                out.append(self.summary(i, self.get(i)))
                self.indexed = i + 1
        except RecordError as exc:
            self.error = str(exc)
            return
        self.summaries = out
        self._parsed.clear()

    def ready(self) -> bool:
        return self.summaries is not None
