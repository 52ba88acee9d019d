"""A served reward model: the training's encoder (chat template, truncation that drops the oldest
exchanges first, then cuts from the front, keeping the reward position) in front of one batch
queue into the packed scorer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from music_core.data import Message
from music_core.errors import MusicError

from .batcher import BatchQueue
from .metrics import Metrics


@dataclass
class Encoded:
    ids: list[int]
    truncated: bool
    first_turn_cut: bool = False  # the whole first exchange was dropped to fit max_length


class RewardService:
    def __init__(self, name: str, path: str, scorer: Any, metrics: Metrics, **queue: Any):
        if not (hasattr(scorer, "encoder") and hasattr(scorer, "score_ids")):
            raise MusicError(f"reward model {name!r} ({path}): its scorer ({type(scorer).__name__}) does not expose the "
                             f"training encoder and score_ids, which serving needs")
        self.name, self.path, self.scorer, self.metrics = name, path, scorer, metrics
        self.encoder = scorer.encoder
        self.queue = BatchQueue(name, scorer.score_ids, metrics, **queue)
        cfg = Path(path) / "config.json"
        stats = json.loads(cfg.read_text()) if cfg.exists() else {}
        self.mean, self.std = float(stats.get("mean", 0.0) or 0.0), float(stats.get("std", 1.0) or 1.0)

    @property
    def max_length(self) -> int:
        return int(self.encoder.max_length)

    def encode_messages(self, messages: list[Message]) -> Encoded:
        e = self.encoder.encode(messages)
        return Encoded(e.ids, bool(e.dropped_turns or e.cut_tokens), e.dropped_turns > 0)

    def encode_text(self, text: str) -> Encoded:
        """Already-templated text (OpenRLHF's queries, vLLM's inputs): tokenized as training
        tokenizes the template's output, cut from the front past max_length as training cuts."""
        ids = self.encoder._tokenize(text)
        cut = max(0, len(ids) - self.max_length)
        return Encoded(ids[cut:], cut > 0)

    async def score(self, encoded: list[Encoded]) -> list[float]:
        # what the model could not see, for /metrics: a cut conversation lost its oldest turns
        self.metrics.truncated.inc(self.name, by=sum(e.truncated for e in encoded))
        self.metrics.first_turn_cut.inc(self.name, by=sum(e.first_turn_cut for e in encoded))
        return await self.queue.submit([e.ids for e in encoded])

    def normalize(self, r: float) -> float:
        return (r - self.mean) / self.std if self.std else r - self.mean
