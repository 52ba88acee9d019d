"""``music_flex``: flex attention for packed rows, with soft-capping, built for head_dim 256.

Gemma-2 caps its attention logits (``50 * tanh(s / 50)``), which no SDPA kernel does, so on
GPU the exact choices are eager attention (it materialises every score) or flex attention with
the cap as a ``score_mod``. transformers' own flex path builds its block mask from packed
position ids with a vmapped mask function per forward and leaves the Triton block sizes to
torch's defaults; this one builds the document-causal block mask once per micro-batch from the
sequence boundaries (``cu_seq_lens_q``) and lets the caller fix the kernel block sizes, which
matters at head_dim 256 where a backward tile must fit in shared memory.

Padded batches (scoring) take the model's own eager attention, which honours the cap too."""

from __future__ import annotations

import functools
import json
import os
import sys
from typing import Any

NAME = "music_flex"
KERNEL_OPTIONS_ENV = "MUSIC_FLEX_KERNEL_OPTIONS"  # JSON, e.g. {"BLOCK_M": 64, "BLOCK_N": 64, ...}
BLOCK = 128  # flex attention's sparse block size
_compiled: Any = None


@functools.cache  # once per process: transformers' registries are global
def register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    AttentionInterface.register(NAME, flex_attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, _mask_for_padded_only)


def _mask_for_padded_only(*args: Any, attention_mask: Any = None, **kwargs: Any) -> Any:
    # packed and unpadded batches get their block mask from block_masks(); building the dense
    # T x T mask here would cost a gigabyte per forward at 16k tokens for nothing
    if attention_mask is None:
        return None
    from transformers.masking_utils import eager_mask

    return eager_mask(*args, attention_mask=attention_mask, **kwargs)  # type: ignore[misc]  # args hold no mask


# Measured on an H100 (benchmarks/results/flex_probe_gemma2-2b_h100.json): at head_dim 256 these block
# sizes run a packed 16k-token row's forward + backward in 4.79 ms against 6.23 ms with torch's
# defaults (8 query heads, 4 KV heads, soft-capped, bf16).
HEAD_DIM_256_OPTIONS = {"BLOCK_M": 64, "BLOCK_N": 32, "BLOCK_M1": 32, "BLOCK_N1": 32, "BLOCK_M2": 32, "BLOCK_N2": 32,
                        "num_stages": 1}


def kernel_options(head_dim: int) -> dict[str, int] | None:
    """Triton block sizes for flex attention: the environment's (JSON in MUSIC_FLEX_KERNEL_OPTIONS)
    if set; the measured ones for head_dim above 128 on a GPU; otherwise torch's defaults."""
    return _kernel_options(os.environ.get(KERNEL_OPTIONS_ENV), head_dim)


@functools.cache  # called by every attention layer of every forward: parse and probe once
def _kernel_options(raw: str | None, head_dim: int) -> dict[str, int] | None:
    if not raw:
        import torch

        return HEAD_DIM_256_OPTIONS if head_dim > 128 and torch.cuda.is_available() else None
    try:
        options = json.loads(raw)
    except json.JSONDecodeError as exc:
        from music_core.errors import ConfigError

        raise ConfigError(f"{KERNEL_OPTIONS_ENV}: not JSON ({exc})") from None
    return {str(k): int(v) for k, v in options.items()}


def block_masks(cu_seqlens: Any, total: int, windows: set[int | None]) -> dict[int | None, Any]:
    """One document-causal block mask per attention window (None: global layers) for a packed row
    of ``total`` tokens whose sequences end at ``cu_seqlens[1:]``. Built once per micro-batch.

    The block structure comes straight from the sequence boundaries at block granularity (a
    few hundred block pairs), not from evaluating the mask over all T x T token pairs as
    ``create_block_mask`` does: that costs a compile per new closure, or a dense T x T pass."""
    import torch
    from torch.nn.attention.flex_attention import BlockMask

    device = cu_seqlens.device
    size = BLOCK
    n = -(-total // size)
    ends = cu_seqlens[1:].to("cpu", torch.int64)
    # document id of every token, padded to whole blocks with an id no real token has
    doc_cpu = torch.full((n * size,), -1, dtype=torch.int64)
    doc_cpu[:total] = torch.bucketize(torch.arange(total), ends, right=True)
    doc = doc_cpu.to(device=device, dtype=torch.int32)
    blocks = doc_cpu.view(n, size)
    real = blocks >= 0
    first = torch.where(real, blocks, torch.iinfo(torch.int64).max).amin(1)  # lowest document in each block
    last = blocks.amax(1)
    whole = real.all(1) & (first == last)  # the block lies inside one document
    qi, kj = torch.arange(n)[:, None], torch.arange(n)[None, :]
    touching = (kj <= qi) & (last[None, :] >= first[:, None]) & (first[None, :] <= last[:, None])
    full = touching & (kj < qi) & whole[:, None] & whole[None, :] & (first[:, None] == first[None, :])
    masks = {}
    for window in windows:
        some, every = touching, full
        if window:
            # nearest pair (q block start, kv block end); farthest pair (q block end, kv block start)
            some = some & ((qi - kj - 1) * size + 1 < window)
            every = every & ((qi - kj + 1) * size - 1 < window)
        partial = some & ~every
        mask_mod = _doc_causal(doc) if not window else _doc_causal_window(doc, window)
        masks[window] = BlockMask.from_kv_blocks(*_kv_layout(partial, device), *_kv_layout(every, device),
                                                 BLOCK_SIZE=size, mask_mod=mask_mod, seq_lengths=(total, total))
    return masks


def _kv_layout(blocks: Any, device: Any) -> tuple[Any, Any]:
    """(counts, indices) of the kv blocks each query block visits, as BlockMask stores them:
    shape (1, 1, q_blocks) and (1, 1, q_blocks, kv_blocks), the visited blocks first."""
    import torch

    counts = blocks.sum(1).to(torch.int32)
    order = torch.argsort((~blocks).to(torch.int8), dim=1, stable=True).to(torch.int32)
    return counts[None, None].to(device), order[None, None].contiguous().to(device)


def _doc_causal(doc: Any) -> Any:
    def mask_mod(b: Any, h: Any, q: Any, kv: Any) -> Any:
        return (doc[q] == doc[kv]) & (q >= kv)
    return mask_mod


def _doc_causal_window(doc: Any, window: int) -> Any:
    def mask_mod(b: Any, h: Any, q: Any, kv: Any) -> Any:
        return (doc[q] == doc[kv]) & (q >= kv) & (q - kv < window)
    return mask_mod


def _flex() -> Any:
    global _compiled
    import torch
    from torch.nn.attention.flex_attention import flex_attention

    if torch.compiler.is_compiling():  # inside a compiled layer (train.compile): it is traced with the layer
        return flex_attention
    if _compiled is None:
        # flex attention is only fast compiled (eager flex is a reference implementation); packed
        # rows vary in length, so after the first shape it compiles once more, with dynamic shapes
        _compiled = torch.compile(flex_attention) if torch.cuda.is_available() else flex_attention
    return _compiled


def flex_attention_forward(module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
                           dropout: float = 0.0, scaling: float | None = None, softcap: float | None = None,
                           **kwargs: Any) -> tuple[Any, None]:
    import torch

    if attention_mask is not None:  # padded: the model's own eager attention (exact, honours the cap)
        eager = sys.modules[type(module).__module__].eager_attention_forward
        extra = {"softcap": softcap} if softcap is not None else {}
        return eager(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **extra,
                     **{k: v for k, v in kwargs.items() if k in ("sliding_window",)})
    if dropout and module.training:
        raise ValueError("music_flex: flex attention has no attention dropout; set the model's attention_dropout to 0")
    window = kwargs.get("sliding_window") or getattr(module, "sliding_window", None)
    masks = kwargs.get("music_block_masks")
    if masks is None:  # an unpadded batch that no caller packed: every row is one sequence
        t = query.shape[2]
        masks = block_masks(torch.tensor([0, t], device=query.device, dtype=torch.int32), t, {window})
    block_mask = masks[window]  # batch 1: broadcast over the rows of an unpadded batch

    limit = float(softcap or 0.0)

    def cap(score: Any, b: Any, h: Any, q: Any, kv: Any) -> Any:
        return limit * torch.tanh(score / limit)

    out = _flex()(query, key, value, score_mod=cap if softcap else None, block_mask=block_mask, scale=scaling,
                  enable_gqa=query.shape[1] != key.shape[1], kernel_options=kernel_options(query.shape[-1]))
    return out.transpose(1, 2).contiguous(), None
