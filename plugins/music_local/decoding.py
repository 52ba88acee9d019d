"""The decoding batch of the local engine: rows that join as they are prefilled and leave as they
finish (continuous batching), with each row's numerics its own.

A prompt is prefilled alone, left-padded to a multiple of PAD_MULTIPLE; its cache is then
left-padded to the batch's width and decoded beside whatever else is running. The matrix
products are row-invariant from MIN_ROWS rows up, and attention over a cache padded on the left
by a multiple of 16 positions is bitwise alike, so a row's logits are the same floats alone,
beside other prompts, or joining a batch halfway (tests/test_synth_trust.py)."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from typing import Any

from music_core.llm.types import ProviderCall

MIN_ROWS = 4  # below 4 rows the CPU kernels take other paths and a row's logits move (by ~3e-5 in float32)
# Attention is bitwise alike over a row's cache padded on the left by a multiple of 16 positions
# and differs (~2e-5) otherwise (measured in float32 on AVX2). Prompts are padded to a multiple
# of PAD_MULTIPLE and rows join a running batch only every JOIN_EVERY steps, so every row's
# extra padding in a batch stays a multiple of 16.
PAD_MULTIPLE = 16
JOIN_EVERY = 16
TOP_P_CANDIDATES = 2048
STOP_TAIL_TOKENS = 16  # a stop string is looked for in the decoded last tokens


@dataclass
class Row:
    job: Any          # the engine's job this sample answers; None for a filler
    index: int        # the sample index within the job
    seed: int
    generator: Any = None
    prompt_tokens: int = 0
    tokens: list[int] = field(default_factory=list)
    step_logits: list[Any] = field(default_factory=list)  # raw logits per step, when log-probabilities are asked
    finish: str | None = None  # "stop" or "length" once done
    extent: int = 0  # cache positions the row owns: its padded prompt, then one per token decoded

    @property
    def params(self) -> Any:
        return self.job.call.params

    @property
    def live(self) -> bool:
        return self.job is not None and self.finish is None

    def room(self) -> int:
        return max(0, self.params.max_tokens - len(self.tokens)) if self.live else 0


def filler_like(row: Row) -> Row:
    """A row that only keeps a batch at MIN_ROWS: never read, never answered."""
    return Row(None, 0, row.seed, seeded_generator(row.seed))


@dataclass
class Batch:
    rows: list[Row]
    logits: Any  # the next-token logits, one row each
    cache: Any
    mask: Any    # [rows, width]; the real tokens of every row end at the last column
    steps: int = 0  # decoding steps since the batch formed


def seeded_generator(seed: int) -> Any:
    import torch

    return torch.Generator().manual_seed(seed)


def row_seed(call: ProviderCall, k: int) -> int:
    """The seed of one row: the request (messages and sampling settings), the sample index and
    the endpoint's seed; nothing about the batch. max_tokens is left out on purpose, so a longer
    budget continues the same sample."""
    p = call.params
    blob = repr((call.messages, p.temperature, p.top_p, p.seed, call.sample_indices[k]))
    return int.from_bytes(hashlib.sha256(blob.encode()).digest()[:8], "little") % (2**63)


def positions(mask: Any) -> Any:
    out = mask.long().cumsum(-1) - 1
    return out.masked_fill(mask == 0, 1)  # as transformers' generate does for left padding


def plain_cache(cache: Any) -> bool:
    """A cache of full-attention layers only, whose keys and values can be left-padded."""
    return type(cache).__name__ == "DynamicCache" and all(
        type(layer).__name__ in ("DynamicLayer", "ReservedLayer") for layer in getattr(cache, "layers", [None]))


def merged(parts: list[Batch]) -> Batch:
    """One batch of the parts' live rows: keys, values and masks left-padded to the widest, columns
    that no row owns cut from the left, fillers added up to MIN_ROWS, and room reserved in the
    cache for every row's remaining tokens."""
    import torch
    from transformers import DynamicCache

    picks = [[i for i, r in enumerate(p.rows) if r.live] for p in parts]
    rows = [p.rows[i] for p, keep in zip(parts, picks) for i in keep]
    fill = [filler_like(rows[0]) for _ in range(max(0, MIN_ROWS - len(rows)))]
    width = max(p.mask.shape[1] for p in parts)

    def stack(tensors: list[Any], seq_dim: int) -> Any:
        padded = [torch.nn.functional.pad(t, (0, 0) * (t.dim() - seq_dim - 1) + (width - t.shape[seq_dim], 0))
                  for t in tensors]
        out = torch.cat(padded)
        return torch.cat([out, out[:1].expand(len(fill), *out.shape[1:])]) if fill else out

    def take(t: Any, keep: list[int]) -> Any:
        return t[keep] if len(keep) < t.shape[0] else t

    mask = stack([take(p.mask, keep) for p, keep in zip(parts, picks)], 1)
    # Columns left of every row's own extent are cut; a row's own prompt padding is kept, since
    # the kernels are bitwise alike over padded widths but not down to a prompt's exact length.
    start = max(0, width - max(r.extent for r in rows))
    room = max(r.room() for r in rows)
    cache = DynamicCache()
    cache.layers = [
        reserved_layer(stack([take(p.cache.layers[i].keys, keep) for p, keep in zip(parts, picks)], 2)[:, :, start:],
                       stack([take(p.cache.layers[i].values, keep) for p, keep in zip(parts, picks)], 2)[:, :, start:],
                       room)
        for i in range(len(parts[0].cache.layers))]
    logits = torch.cat([take(p.logits, keep) for p, keep in zip(parts, picks)])
    if fill:
        logits = torch.cat([logits, logits[:1].expand(len(fill), -1)])
    return Batch(rows + fill, logits, cache, mask[:, start:], max(p.steps for p in parts))


def reserved_layer(keys: Any, values: Any, room: int) -> Any:
    return _reserved_layer_class()(keys, values, room)


@functools.cache  # transformers is imported when the engine loads its model, not with this module
def _reserved_layer_class() -> type:
    import torch
    from transformers.cache_utils import DynamicLayer

    class ReservedLayer(DynamicLayer):
        """A full-attention cache layer with ``room`` positions reserved: each decoding step
        writes its key and value in place, and attention reads the filled part as a view.
        transformers' DynamicLayer concatenates, copying the whole cache at every step: for 32
        rows of 600 positions that is ~0.9 GB a step on a 135M model, more than reading the
        weights."""

        def __init__(self, keys: Any, values: Any, room: int) -> None:
            super().__init__()
            b, h, n, d = keys.shape
            self._keys = keys.new_zeros((b, h, n + room, d))
            self._values = values.new_zeros((b, h, n + room, d))
            self._keys[:, :, :n] = keys
            self._values[:, :, :n] = values
            self._filled = n
            self.keys, self.values = self._keys[:, :, :n], self._values[:, :, :n]
            self.device, self.is_initialized = keys.device, True

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            end = self._filled + key_states.shape[-2]
            if end > self._keys.shape[-2]:  # past the reservation: grow as transformers does
                self._keys = torch.cat([self._keys[:, :, : self._filled], key_states], dim=-2)
                self._values = torch.cat([self._values[:, :, : self._filled], value_states], dim=-2)
            else:
                self._keys[:, :, self._filled:end] = key_states
                self._values[:, :, self._filled:end] = value_states
            self._filled = end
            self.keys, self.values = self._keys[:, :, :end], self._values[:, :, :end]
            return self.keys, self.values

    return ReservedLayer


def next_tokens(logits: Any, rows: list[Row]) -> list[int]:
    """Each row's next token: the argmax at temperature 0, else a sample from the tempered,
    top-p-filtered distribution by the Gumbel-max trick with the row's own generator. Rows of one
    setting are computed together; every operation is per row, so a row's token depends on its
    own logits, setting and generator alone."""

    out = [0] * len(rows)
    groups: dict[tuple[float, float | None], list[int]] = {}
    for i, r in enumerate(rows):
        p = r.params if r.job is not None else None
        key = (p.temperature, p.top_p if p.top_p is not None and p.top_p < 1.0 else None) if p else (0.0, None)
        groups.setdefault(key, []).append(i)
    for (temperature, top_p), idx in groups.items():
        part = logits[idx].float()
        if temperature <= 0:
            picks = part.argmax(dim=-1).tolist()
        else:
            picks = _sampled(part / temperature, top_p, [rows[i].generator for i in idx])
        for i, t in zip(idx, picks):
            out[i] = t
    return out


def _sampled(logits: Any, top_p: float | None, generators: list[Any]) -> list[int]:
    import torch

    if top_p is None:
        logp = logits.log_softmax(dim=-1)
        u = torch.stack([torch.rand(logits.shape[-1], generator=g) for g in generators]).to(logits.device)
        return (logp + _gumbel(u)).argmax(dim=-1).tolist()
    # Noise only for the tokens top-p keeps (tens to hundreds, not the 49k of the vocabulary:
    # drawing for every token was a tenth of the offline engine's time), in the order of their
    # logits, so a row's draws depend on its own distribution and seed alone. The kept set is
    # found among the TOP_P_CANDIDATES likeliest tokens (sorting all 49k for 16 rows took 50 ms
    # a step, a third of a forward; among 2048, 8 ms: SmolLM2's top-0.95 set at temperature 0.8
    # held more than 1024 tokens at 4.5% of positions of a README); a row whose set reaches past
    # them is sorted whole.
    k = min(TOP_P_CANDIDATES, logits.shape[-1])
    top, order = logits.topk(k, dim=-1)
    probs = (top - logits.logsumexp(dim=-1, keepdim=True)).exp()
    kept = ((probs.cumsum(dim=-1) - probs) <= top_p).sum(dim=-1).tolist()  # the first token past top_p too
    picks = []
    for row, (g, n) in enumerate(zip(generators, kept)):
        values, ids = top[row, :n], order[row, :n]
        if n == k < logits.shape[-1]:
            values, ids = torch.sort(logits[row], descending=True, stable=True)
            p = (values - logits[row].logsumexp(dim=-1)).exp()
            n = int(((p.cumsum(dim=-1) - p) <= top_p).sum())
            values, ids = values[:n], ids[:n]
        noise = _gumbel(torch.rand(n, generator=g).to(logits.device))
        picks.append(int(ids[int((values - values.logsumexp(dim=-1) + noise).argmax())]))
    return picks


def _gumbel(u: Any) -> Any:
    import torch

    return -torch.log(-torch.log(u.clamp_(1e-10, 1.0 - 1e-7)))
