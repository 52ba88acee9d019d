"""An encoder's own classification head: the first token's hidden state through a dense layer
and tanh (BERT's pooler), then a linear map with bias. BERT-style ``*ForSequenceClassification``
models compute exactly this, so the trained model exports as the standard class."""

import torch


def build(hidden_size, settings):
    dense = torch.nn.Linear(hidden_size, hidden_size, dtype=torch.float32)
    out = torch.nn.Linear(hidden_size, 1, dtype=torch.float32)
    torch.nn.init.normal_(out.weight, std=1.0 / (hidden_size + 1) ** 0.5)
    torch.nn.init.zeros_(out.bias)
    return torch.nn.Sequential(dense, torch.nn.Tanh(), out)


def reward(module, hidden, spans, settings):
    first = torch.tensor(list(spans.starts), device=hidden.device)
    return module(hidden[first].float()).squeeze(-1)
