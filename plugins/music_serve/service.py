"""A served reward model: its scorer's encoder (chat template, truncation that drops the oldest
exchanges first, then cuts from the front, keeping the reward position) in front of one batch
queue into the packed scorer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from music_core.data import Message
from music_core.errors import MusicError
from music_core.packed import EncodedConversation, PackedScorer

from .batcher import BatchQueue
from .metrics import Metrics


class RewardService:
    """One served RM: any scorer that implements :class:`music_core.packed.PackedScorer`,
    whichever trainer made it."""

    def __init__(self, name: str, path: str, scorer: Any, metrics: Metrics, **queue: Any):
        if not isinstance(scorer, PackedScorer):
            raise MusicError(f"reward model {name!r} ({path}): its scorer ({type(scorer).__name__}) does not implement "
                             f"music_core.packed.PackedScorer (encode, tokenize, score_ids, max_length, "
                             f"tokens_per_batch), which serving needs")
        self.name, self.path, self.scorer, self.metrics = name, path, scorer, metrics
        self.queue = BatchQueue(name, scorer.score_ids, metrics, **queue)
        cfg = Path(path) / "config.json"
        stats = json.loads(cfg.read_text()) if cfg.exists() else {}
        self.mean, self.std = float(stats.get("mean", 0.0) or 0.0), float(stats.get("std", 1.0) or 1.0)

    @property
    def max_length(self) -> int:
        return int(self.scorer.max_length)

    def encode_messages(self, messages: list[Message]) -> EncodedConversation:
        return self.scorer.encode(messages)

    def encode_text(self, text: str) -> EncodedConversation:
        """Already-templated text (OpenRLHF's queries, vLLM's inputs): tokenized as training
        tokenizes the template's output, cut from the front past max_length as training cuts."""
        ids = self.scorer.tokenize(text)
        cut = max(0, len(ids) - self.max_length)
        return EncodedConversation(ids[cut:], cut > 0)

    async def score(self, encoded: list[EncodedConversation]) -> list[float]:
        # what the model could not see, for /metrics: a cut conversation lost its oldest turns
        self.metrics.truncated.inc(self.name, by=sum(e.truncated for e in encoded))
        self.metrics.first_turn_cut.inc(self.name, by=sum(e.first_turn_cut for e in encoded))
        return await self.queue.submit([e.ids for e in encoded])

    def normalize(self, r: float) -> float:
        return (r - self.mean) / self.std if self.std else r - self.mean
