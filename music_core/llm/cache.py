"""A content-addressed SQLite cache of LLM samples, safe under concurrency (WAL; several
processes may share one file). The key hashes everything that can change an answer: the
provider, model, base_url and request-shaping options (the provider's ``cache_identity``), the
resolved sampling parameters, the messages and the sample index; never the API key or
credentials.

Writes go through a background thread so the event loop never waits on SQLite; a sample is
readable from memory the moment it is put, and ``close`` (or ``flush``) waits for the disk.
A hard kill can lose the last few milliseconds of writes: those calls are simply made again.
"""

from __future__ import annotations

import hashlib
import json
import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from .types import Completion, SamplingParams

_STOP = object()


def identity_json(identity: dict[str, Any]) -> str:
    """The endpoint part of every key, serialized once per endpoint."""
    return json.dumps(identity, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def sample_keys(identity: str, params: SamplingParams, messages: Any, indices: list[int]) -> list[str]:
    """Keys of samples ``indices`` of one request. ``identity`` is :func:`identity_json` of the
    provider's ``cache_identity``: provider, model, base_url and every option that can change
    an answer."""
    body = json.dumps({"params": params.as_key(), "messages": messages}, sort_keys=True, ensure_ascii=False,
                      separators=(",", ":"), default=str)
    return [hashlib.sha256(f"{identity}\n{body}\n{i}".encode()).hexdigest() for i in indices]


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), timeout=60, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=60000")
    return db


class CallCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._read = _connect(self.path)
        self._read.execute("CREATE TABLE IF NOT EXISTS samples (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
                           "provider TEXT, model TEXT, created REAL)")
        self._read_lock = threading.Lock()
        # Every key on disk, so that a miss (every call of a fresh run) costs no SQLite query on
        # the event loop. Answers another process writes later are not seen: shards are disjoint.
        self._known: set[str] = {k for (k,) in self._read.execute("SELECT key FROM samples")}
        self._pending: dict[str, Completion] = {}  # put but not yet on disk
        self._pending_lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._writer = threading.Thread(target=self._write_loop, name="music-cache-writer", daemon=True)
        self._writer.start()
        self._closed = False

    def _write_loop(self) -> None:
        db = _connect(self.path)
        while True:
            item = self._queue.get()
            batch = [item]
            while True:  # group whatever else is waiting into one transaction
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            rows = [r for b in batch if b is not _STOP and not isinstance(b, threading.Event) for r in b]
            if rows:
                db.execute("BEGIN")
                db.executemany("INSERT OR IGNORE INTO samples VALUES (?, ?, ?, ?, ?)", rows)
                db.execute("COMMIT")
                with self._pending_lock:
                    for r in rows:
                        self._pending.pop(r[0], None)
            for b in batch:
                if isinstance(b, threading.Event):
                    b.set()
            if any(b is _STOP for b in batch):
                db.close()
                return

    def get_many(self, keys: list[str]) -> dict[str, Completion]:
        if not keys:
            return {}
        found: dict[str, Completion] = {}
        with self._pending_lock:
            for k in keys:
                if k in self._pending:
                    c = self._pending[k]
                    found[k] = Completion(c.text, c.finish_reason, c.usage, cached=True)
        rest = [k for k in keys if k not in found and k in self._known]
        if rest:
            with self._read_lock:
                rows = self._read.execute(f"SELECT key, value FROM samples WHERE key IN ({','.join('?' * len(rest))})",
                                          rest).fetchall()
            found.update({k: Completion.from_json(json.loads(v), cached=True) for k, v in rows})
        return found

    def put_many(self, items: list[tuple[str, Completion]], provider: str, model: str) -> None:
        now = time.time()
        with self._pending_lock:
            for k, c in items:
                self._pending[k] = c
                self._known.add(k)
        self._queue.put([(k, json.dumps(c.to_json(), ensure_ascii=False), provider, model, now) for k, c in items])

    def flush(self) -> None:
        done = threading.Event()
        self._queue.put(done)
        done.wait()

    def __len__(self) -> int:
        self.flush()
        with self._read_lock:
            return self._read.execute("SELECT COUNT(*) FROM samples").fetchone()[0]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._writer.join()
        with self._read_lock:
            self._read.close()
