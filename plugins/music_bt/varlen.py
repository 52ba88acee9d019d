"""``music_varlen``: attention for packed rows that costs what the documents cost.

transformers turns packed position ids into a block-diagonal mask, and SDPA then computes
every block of the row, masked or not: a row of 8k tokens pays for 8k x 8k scores even when
it holds eight 1k-token sequences (8x the attention work). This implementation attends each
packed sequence on its own (boundaries from ``cu_seq_lens_q``), causal, through SDPA's fused
kernels; sequences with soft-capping or longer than a sliding window take the exact eager path.
It is registered with transformers' AttentionInterface and used for packed batches on CPU (on
GPU, flex attention's block mask skips the empty blocks itself)."""

from __future__ import annotations

import functools
from typing import Any

NAME = "music_varlen"


@functools.cache  # once per process: transformers' registries are global
def register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, varlen_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)  # padded inputs still get a normal mask


def varlen_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
                     scaling: float | None = None, **kwargs: Any) -> tuple[Any, None]:
    import torch
    import torch.nn.functional as F
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    cu = kwargs.get("cu_seq_lens_q")
    if cu is None or query.shape[0] != 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **{k: v for k, v in kwargs.items() if k != "softcap"})
    groups = query.shape[1] // key.shape[1]
    softcap = kwargs.get("softcap")
    window = kwargs.get("sliding_window") or getattr(module, "sliding_window", None)
    p = dropout if module.training else 0.0
    outs = []
    bounds = cu.tolist()
    for s, e in zip(bounds[:-1], bounds[1:]):
        q, k, v = query[:, :, s:e], key[:, :, s:e], value[:, :, s:e]
        if softcap or (window and e - s > window):
            outs.append(_eager(q, k, v, groups, scaling, softcap, window, p))
        else:
            outs.append(F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling, dropout_p=p,
                                                       enable_gqa=groups > 1))
    out = torch.cat(outs, dim=2)
    return out.transpose(1, 2).contiguous(), None


def _eager(q: Any, k: Any, v: Any, groups: int, scaling: float | None, softcap: float | None,
           window: int | None, p: float) -> Any:
    import torch

    if groups > 1:
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
    scale = scaling if scaling is not None else q.shape[-1] ** -0.5
    scores = (q @ k.transpose(-1, -2)) * scale
    if softcap:
        scores = softcap * torch.tanh(scores / softcap)
    t = q.shape[2]
    i = torch.arange(t, device=q.device)
    allowed = i[None, :] <= i[:, None]
    if window:
        allowed &= (i[:, None] - i[None, :]) < window
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    if p:
        probs = torch.nn.functional.dropout(probs, p=p)
    return probs @ v
