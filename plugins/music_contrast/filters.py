"""Pair filters that need no model: drop pairs whose branches barely differ."""

from __future__ import annotations

from dataclasses import dataclass

from music_core.contracts import FilterVerdict, PairFilter
from music_core.data import PreferencePair
from music_core.synth.text import similarity


@dataclass
class DistinctOptions:
    max_similarity: float = 0.9  # an answer pair this alike carries no contrast
    min_distinct_turns: int = 1


class DistinctAnswersFilter(PairFilter):
    """Keeps a pair only if at least ``min_distinct_turns`` of its assistant turns differ
    between chosen and rejected by more than ``max_similarity`` (word-level)."""

    name = "distinct-answers"
    options_class = DistinctOptions
    description = "drops pairs whose chosen and rejected answers are near copies"

    async def keep(self, pair: PreferencePair) -> FilterVerdict:
        start = int(pair.meta.get("prefix_messages", 0))
        chosen = [m["content"] for m in pair.chosen[start:] if m["role"] == "assistant"]
        rejected = [m["content"] for m in pair.rejected[start:] if m["role"] == "assistant"]
        distinct = sum(1 for c, r in zip(chosen, rejected) if similarity(c, r) <= self.opts.max_similarity)
        if distinct >= self.opts.min_distinct_turns:
            return FilterVerdict(True)
        return FilterVerdict(False, f"only {distinct} of {len(chosen)} turns differ (need {self.opts.min_distinct_turns})")
