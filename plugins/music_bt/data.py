"""Pairs -> encoded examples, and the deterministic order in which steps visit them."""

from __future__ import annotations

import math
import random
from typing import Any

from music_core.data import PreferencePair

from .batching import PairExample
from .encoding import ConversationEncoder, TruncationStats, encode_pair


def encode_pairs(encoder: ConversationEncoder, pairs: list[PreferencePair], stats: TruncationStats,
                 use_margin: bool = False) -> list[PairExample]:
    out = []
    for i, p in enumerate(pairs):
        c, r = encode_pair(encoder, p.chosen, p.rejected, stats)
        margin = float(p.meta.get("margin", 0.0)) if use_margin else 0.0
        out.append(PairExample(i, c, r, margin))
    return out


def total_steps(n_pairs: int, batch_size: int, epochs: float, max_steps: int) -> int:
    if max_steps > 0:
        return max_steps
    return max(1, math.ceil(epochs * n_pairs / batch_size))


def step_indices(step: int, n_pairs: int, batch_size: int, seed: int) -> list[int]:
    """The pair indices of one optimizer step: a fresh seeded permutation per epoch, consumed in
    order, wrapping across epochs. A pure function of (step, seed): resuming at step k visits
    exactly what an uninterrupted run would have."""
    out = []
    for k in range(step * batch_size, (step + 1) * batch_size):
        epoch, pos = divmod(k, n_pairs)
        out.append(_permutation(epoch, n_pairs, seed)[pos])
    return out


_PERM_CACHE: dict[tuple[int, int, int], list[int]] = {}


def _permutation(epoch: int, n: int, seed: int) -> list[int]:
    key = (epoch, n, seed)
    if key not in _PERM_CACHE:
        perm = list(range(n))
        random.Random(f"{seed}:{epoch}").shuffle(perm)
        _PERM_CACHE.clear()
        _PERM_CACHE[key] = perm
    return _PERM_CACHE[key]


def describe(stats: TruncationStats) -> dict[str, Any]:
    return stats.to_dict()
