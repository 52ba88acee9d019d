"""Reward heads. Each maps flat hidden states ``[tokens, hidden]`` and the sequence spans to
one float32 reward per sequence; the same code serves packed and padded batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from music_core.config import options
from music_core.contracts import RewardHead, SequenceSpans


def _linear(hidden_size: int) -> Any:
    import torch

    head = torch.nn.Linear(hidden_size, 1, bias=False, dtype=torch.float32)
    torch.nn.init.normal_(head.weight, std=1.0 / (hidden_size + 1) ** 0.5)  # as TRL/HF init the score head
    return head


class LastTokenHead(RewardHead):
    """The paper's head: a linear map of the last real token's hidden state."""

    name = "last-token"
    description = "linear score of the conversation's last token (decoders; the paper's)"
    native_export = True
    pooling = "last"

    def build(self, hidden_size: int) -> Any:
        return _linear(hidden_size)

    def reward(self, module: Any, hidden: Any, spans: SequenceSpans) -> Any:
        import torch

        last = torch.tensor([e - 1 for e in spans.ends], device=hidden.device)
        return module(hidden[last].float()).squeeze(-1)


class MeanPoolHead(RewardHead):
    """Mean of every token's hidden state, then linear: the pooling encoders were trained for."""

    name = "mean-pool"
    description = "linear score of the mean hidden state (encoders)"
    pooling = "mean"

    def build(self, hidden_size: int) -> Any:
        return _linear(hidden_size)

    def reward(self, module: Any, hidden: Any, spans: SequenceSpans) -> Any:
        import torch

        seg = torch.full((hidden.shape[0],), -1, dtype=torch.long, device=hidden.device)
        for i, (s, e) in enumerate(zip(spans.starts, spans.ends)):
            seg[s:e] = i
        keep = seg >= 0
        sums = torch.zeros(len(spans), hidden.shape[1], device=hidden.device, dtype=torch.float32)
        sums.index_add_(0, seg[keep], hidden[keep].float())
        counts = torch.tensor([e - s for s, e in zip(spans.starts, spans.ends)], device=hidden.device, dtype=torch.float32)
        return module(sums / counts[:, None]).squeeze(-1)


@dataclass
class PerTurnOptions:
    combine: str = "mean"  # mean | min | last


class PerTurnHead(RewardHead):
    """Scores the end of every assistant turn and combines them: a conversation is only as good
    as its turns (``min``), on average (``mean``), or as its last (``last``)."""

    name = "per-turn"
    description = "scores every assistant turn's end, combined by mean, min or last"
    pooling = "turns"

    def __init__(self, opts=None, ctx=None):
        super().__init__(opts, ctx)
        self.opts = options(PerTurnOptions, opts, "train.head_options")
        if self.opts.combine not in ("mean", "min", "last"):
            from music_core.errors import ConfigError

            raise ConfigError("config key 'train.head_options.combine': must be mean, min or last")

    def build(self, hidden_size: int) -> Any:
        return _linear(hidden_size)

    def reward(self, module: Any, hidden: Any, spans: SequenceSpans) -> Any:
        import torch

        flat = [p for ends in spans.turn_ends for p in ends]
        owner = torch.tensor([i for i, ends in enumerate(spans.turn_ends) for _ in ends], device=hidden.device)
        scores = module(hidden[torch.tensor(flat, device=hidden.device)].float()).squeeze(-1)
        return combine(scores, owner, len(spans), self.opts.combine)


def combine(scores: Any, owner: Any, n: int, how: str) -> Any:
    """Per-turn scores -> one per sequence (shared with the exported model's remote code)."""
    import torch

    if how == "mean":
        total = torch.zeros(n, device=scores.device, dtype=scores.dtype).index_add_(0, owner, scores)
        count = torch.zeros(n, device=scores.device, dtype=scores.dtype).index_add_(0, owner, torch.ones_like(scores))
        return total / count
    if how == "min":
        return torch.full((n,), float("inf"), device=scores.device, dtype=scores.dtype).scatter_reduce(0, owner, scores, "amin")
    last = torch.zeros(n, dtype=torch.long, device=scores.device).scatter_reduce(
        0, owner, torch.arange(len(owner), device=scores.device), "amax")
    return scores[last]
