"""The paper's reward head: a linear map of the last real token's hidden state."""

import torch


def build(hidden_size, settings):
    head = torch.nn.Linear(hidden_size, 1, bias=False, dtype=torch.float32)
    torch.nn.init.normal_(head.weight, std=1.0 / (hidden_size + 1) ** 0.5)  # as TRL/HF init the score head
    return head


def reward(module, hidden, spans, settings):
    last = torch.tensor([e - 1 for e in spans.ends], device=hidden.device)
    return module(hidden[last].float()).squeeze(-1)
