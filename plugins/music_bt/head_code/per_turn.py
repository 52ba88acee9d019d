"""Scores the end of every assistant turn and combines them (``settings["combine"]``): a
conversation is only as good as its worst turn (``min``), on average (``mean``), or as its
last (``last``)."""

import torch


def build(hidden_size, settings):
    head = torch.nn.Linear(hidden_size, 1, bias=False, dtype=torch.float32)
    torch.nn.init.normal_(head.weight, std=1.0 / (hidden_size + 1) ** 0.5)
    return head


def reward(module, hidden, spans, settings):
    flat = [p for ends in spans.turn_ends for p in ends]
    owner = torch.tensor([i for i, ends in enumerate(spans.turn_ends) for _ in ends], device=hidden.device)
    scores = module(hidden[torch.tensor(flat, device=hidden.device)].float()).squeeze(-1)
    return combine(scores, owner, len(spans.starts), settings.get("combine", "mean"))


def combine(scores, owner, n, how):
    if how == "mean":
        total = torch.zeros(n, device=scores.device, dtype=scores.dtype).index_add_(0, owner, scores)
        count = torch.zeros(n, device=scores.device, dtype=scores.dtype).index_add_(0, owner, torch.ones_like(scores))
        return total / count
    if how == "min":
        return torch.full((n,), float("inf"), device=scores.device, dtype=scores.dtype).scatter_reduce(
            0, owner, scores, "amin")
    last = torch.zeros(n, dtype=torch.long, device=scores.device).scatter_reduce(
        0, owner, torch.arange(len(owner), device=scores.device), "amax")
    return scores[last]
