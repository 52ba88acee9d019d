"""Micro-batches of pairs: padding-free packing (decoders) or length-grouped padding.

A pair's chosen and rejected sequences always share a micro-batch (the loss needs both). Packed
micro-batches are one row of concatenated sequences whose position ids restart at every
sequence, so the model attends block-diagonally; nothing is padded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from music_core.contracts import SequenceSpans

from .encoding import Encoded


@dataclass
class PairExample:
    index: int
    chosen: Encoded
    rejected: Encoded
    margin: float = 0.0

    @property
    def tokens(self) -> int:
        return len(self.chosen.ids) + len(self.rejected.ids)


@dataclass
class MicroBatch:
    pairs: list[PairExample]
    input_ids: Any
    spans: SequenceSpans
    position_ids: Any = None      # packed
    attention_mask: Any = None    # padded
    real_tokens: int = 0
    computed_tokens: int = 0      # real + padding
    filler_ends: list[int] | None = None  # packed rows padded to a fixed shape: the filler's own sequences

    def cu_seqlens(self, device: Any) -> Any:
        """Cumulative sequence boundaries of a packed row (varlen attention's input), the filler's
        sequences included so that no real token attends to it."""
        import torch

        return torch.tensor([0] + list(self.spans.ends) + list(self.filler_ends or []), dtype=torch.int32, device=device)

    def to(self, device: Any) -> MicroBatch:
        self.input_ids = self.input_ids.to(device)
        if self.position_ids is not None:
            self.position_ids = self.position_ids.to(device)
        if self.attention_mask is not None:
            self.attention_mask = self.attention_mask.to(device)
        return self


def group_by_tokens(pairs: list[PairExample], budget: int, padded: bool,
                    overhead_tokens: int = 0) -> list[list[PairExample]]:
    """Micro-batches of at most ``budget`` computed tokens (a pair over budget goes alone).

    Packed: first-fit decreasing on the sum of lengths, nothing is padded.
    Padded: rows x longest row is what is computed, so one micro-batch for a step of short and
    long pairs pads every short one to the longest (58% of the offline run's tokens were
    padding). The pairs are sorted by length and cut where the computed tokens, plus
    ``overhead_tokens`` for each micro-batch's fixed cost, are fewest."""
    if padded:
        return _least_padding(pairs, budget, overhead_tokens)
    groups: list[list[PairExample]] = []
    loads: list[int] = []
    for p in sorted(pairs, key=lambda p: -p.tokens):
        for g, group in enumerate(groups):
            if loads[g] + p.tokens <= budget:
                group.append(p)
                loads[g] += p.tokens
                break
        else:
            groups.append([p])
            loads.append(p.tokens)
    return groups


def _least_padding(pairs: list[PairExample], budget: int, overhead_tokens: int) -> list[list[PairExample]]:
    # Sorted by length, an optimal split is contiguous: best[j] is the least cost of the j longest.
    order = sorted(pairs, key=lambda p: -_longest(p))
    best = [0] + [-1] * len(order)
    cut = [0] * (len(order) + 1)
    for j in range(1, len(order) + 1):
        for i in range(j):
            computed = 2 * (j - i) * _longest(order[i])
            if computed > budget and j - i > 1:
                continue
            cost = best[i] + computed + overhead_tokens
            if best[j] < 0 or cost < best[j]:
                best[j], cut[j] = cost, i
    groups: list[list[PairExample]] = []
    j = len(order)
    while j > 0:
        groups.append(order[cut[j]:j])
        j = cut[j]
    return groups[::-1]


def _longest(p: PairExample) -> int:
    return max(len(p.chosen.ids), len(p.rejected.ids))


def packed(pairs: list[PairExample], row_tokens: int = 0, pad_id: int = 0) -> MicroBatch:
    """One row of the pairs' sequences. With ``row_tokens``, a shorter row is filled up to that
    length with pad tokens forming sequences of their own (each no longer than the row's longest
    real one, so positions stay within what the model has seen): every micro-batch then has the
    same shape and compiled layers never recompile. No reward is read from the filler."""
    import torch

    ids: list[int] = []
    pos: list[int] = []
    starts: list[int] = []
    ends: list[int] = []
    turn_ends: list[list[int]] = []
    for p in pairs:
        for e in (p.chosen, p.rejected):
            off = len(ids)
            ids += e.ids
            pos += range(len(e.ids))
            starts.append(off)
            ends.append(off + len(e.ids))
            turn_ends.append([off + t for t in e.turn_ends])
    n = len(ids)
    filler_ends: list[int] = []
    if row_tokens > n:
        longest = max(e - s for s, e in zip(starts, ends))
        while len(ids) < row_tokens:
            k = min(longest, row_tokens - len(ids))
            ids += [pad_id] * k
            pos += range(k)
            filler_ends.append(len(ids))
    return MicroBatch(pairs, torch.tensor([ids]), SequenceSpans(starts, ends, turn_ends),
                      position_ids=torch.tensor([pos]), real_tokens=n, computed_tokens=len(ids),
                      filler_ends=filler_ends or None)


def padded(pairs: list[PairExample], pad_id: int) -> MicroBatch:
    import torch

    seqs = [e for p in pairs for e in (p.chosen, p.rejected)]
    width = max(len(e.ids) for e in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    starts, ends, turn_ends = [], [], []
    for row, e in enumerate(seqs):
        ids[row, : len(e.ids)] = torch.tensor(e.ids)
        mask[row, : len(e.ids)] = 1
        off = row * width  # flat index of the row's first token
        starts.append(off)
        ends.append(off + len(e.ids))  # the reward position comes from the mask, never from pad ids
        turn_ends.append([off + t for t in e.turn_ends])
    real = sum(len(e.ids) for e in seqs)
    return MicroBatch(pairs, ids, SequenceSpans(starts, ends, turn_ends), attention_mask=mask,
                      real_tokens=real, computed_tokens=len(seqs) * width)
