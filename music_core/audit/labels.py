"""Human labels of pairs (``labels.jsonl`` beside the pairs, written by ``music inspect``): one
line per label, ``{"pair_id", "labeller", "shown_order", "verdict", "preferred", "note", "time"}``
where ``shown_order`` is which side was shown first and second (``["rejected", "chosen"]``) and
``verdict`` what the labeller said of the two as shown (``first``, ``second``, ``tie``,
``invalid``: both bad). A later label of the same pair by the same labeller supersedes the
earlier line, which stays in the file."""

from __future__ import annotations

import json
import random
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import RecordError
from ..jsonl import append_line, cut_torn_tail

VERDICTS = ("first", "second", "tie", "invalid")
SIDES = ("chosen", "rejected")


def shown_order(pair_id: str, labeller: str, seed: int = 0) -> list[str]:
    """The blind order of a pair for one labeller: seeded, so a restart shows the same order."""
    first = "chosen" if random.Random(f"{seed}:{labeller}:{pair_id}").random() < 0.5 else "rejected"
    return [first, "rejected" if first == "chosen" else "chosen"]


def preferred(verdict: str, order: list[str]) -> str:
    """What the verdict says of the pair: chosen, rejected, tie or invalid."""
    return {"first": order[0], "second": order[1]}.get(verdict, verdict)


def read_labels(path: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every label line, and warnings. A last line cut by a kill is ignored with a warning (all
    lines before it are kept); a bad line elsewhere names file:line."""
    path = Path(path)
    if not path.exists():
        return [], []
    lines = path.read_bytes().split(b"\n")
    torn = lines[-1] != b""  # a whole file ends with a newline
    rows: list[dict[str, Any]] = []
    warnings: list[str] = []
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
            if not isinstance(row, dict) or not {"pair_id", "labeller", "verdict", "shown_order"} <= set(row):
                raise ValueError("not a label record")
        except (ValueError, UnicodeDecodeError) as exc:
            if torn and lineno == len(lines):
                warnings.append(f"{path}:{lineno}: last line was cut (a kill mid-write?); ignored")
                continue
            raise RecordError(str(path), lineno, f"bad label line ({exc})") from None
        rows.append(row)
    return rows, warnings


def latest(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(pair_id, labeller) -> that labeller's last label of the pair."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        out[(str(row["pair_id"]), str(row["labeller"]))] = row
    return out


class LabelLog:
    """Appends labels, one fsynced line each; a torn last line is cut off when it opens."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.warnings = read_labels(self.path)[1]
        cut_torn_tail(self.path)
        self._lock = threading.Lock()
        self._latest = latest(read_labels(self.path)[0])  # (pair, labeller) -> that labeller's last label

    def append(self, pair_id: str, labeller: str, verdict: str, order: list[str], note: str = "",
               seed: int = 0) -> dict[str, Any]:
        record = {"pair_id": pair_id, "labeller": labeller, "shown_order": order, "verdict": verdict,
                  "preferred": preferred(verdict, order), "note": note, "seed": seed,
                  "time": datetime.now(UTC).isoformat(timespec="seconds")}
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            append_line(fh, record)
            self._latest[(pair_id, labeller)] = record
        return record

    def labelled_by(self, labeller: str) -> set[str]:
        return {pid for (pid, who) in list(self._latest) if who == labeller}

    def previous(self, pair_id: str, labeller: str) -> dict[str, Any] | None:
        return self._latest.get((pair_id, labeller))
