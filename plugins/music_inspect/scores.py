"""Reward models' view of the pairs (``music inspect --rm NAME=PATH``): each side's reward and
the reward after each assistant turn, for the pair on screen; and, in a background thread, every
pair's reward difference, for the "RM disagrees with the label" filter."""

from __future__ import annotations

import threading
from typing import Any

from music_core.contracts import Seen
from music_core.data import Message
from music_core.scoring import items_seen, truncation

CHUNK = 32


class RewardView:
    def __init__(self, scorers: dict[str, Any], store: Any):
        self.scorers, self.store = scorers, store
        self._lock = threading.Lock()  # one forward at a time: the scorers are not thread-safe
        self.diffs: dict[str, dict[int, float]] = {name: {} for name in scorers}
        self.seen: dict[str, dict[int, Seen] | None] = {name: {} for name in scorers}  # per pair: what the RM saw
        if scorers:
            threading.Thread(target=self._score_all, daemon=True, name="inspect-scores").start()

    def _score(self, name: str, convs: list[list[Message]]) -> list[float]:
        return self._score_seen(name, convs)[0]

    def _score_seen(self, name: str, convs: list[list[Message]]) -> tuple[list[float], list[Seen] | None]:
        with self._lock:
            rewards, seen = self.scorers[name].score_seen(convs)
            return [float(x) for x in rewards], seen

    def pair(self, pair: Any) -> dict[str, Any]:
        """Both sides' rewards, and after each assistant turn of each side."""
        out = {}
        for name in self.scorers:
            ends = {side: [k + 1 for k, m in enumerate(getattr(pair, side)) if m["role"] == "assistant"]
                    for side in ("chosen", "rejected")}
            convs = [getattr(pair, side)[:e] for side in ("chosen", "rejected") for e in ends[side]]
            flat = self._score(name, convs)
            n = len(ends["chosen"])
            out[name] = {"chosen": flat[n - 1], "rejected": flat[-1],
                         "chosen_turns": dict(zip(map(str, (e - 1 for e in ends["chosen"])), flat[:n])),
                         "rejected_turns": dict(zip(map(str, (e - 1 for e in ends["rejected"])), flat[n:]))}
        return out

    def _score_all(self) -> None:
        for start in range(0, self.store.count, CHUNK):
            idx = [i for i in range(start, min(self.store.count, start + CHUNK)) if self.store.usable(i)]
            pairs = [self.store.get(i) for i in idx]
            for name in self.scorers:
                rewards, seen = self._score_seen(name, [p.chosen for p in pairs] + [p.rejected for p in pairs])
                per_pair = items_seen(seen, [(k, len(idx) + k) for k in range(len(idx))])
                for k, i in enumerate(idx):
                    self.diffs[name][i] = rewards[k] - rewards[len(idx) + k]
                    pairs_seen = self.seen[name]
                    if per_pair is None or pairs_seen is None:
                        self.seen[name] = None
                    else:
                        pairs_seen[i] = per_pair[k]

    def truncation(self) -> dict[str, dict[str, Any]]:
        """Per RM, what it could not see of the pairs scored so far (music_core.scoring)."""
        out = {}
        for name, scorer in self.scorers.items():
            seen = self.seen[name]
            hits = [int(self.diffs[name][i] > 0) for i in seen] if seen is not None else None
            out[name] = truncation(list(seen.values()) if seen is not None else None, scorer.limits(), hits)
        return out

    def disagrees(self, i: int) -> bool | None:
        """Does any RM score rejected above chosen (None: not scored yet)?"""
        seen = [d[i] for d in self.diffs.values() if i in d]
        return None if not seen else any(x < 0 for x in seen)

    def scored(self) -> int:
        return min((len(d) for d in self.diffs.values()), default=0)
