"""One generation engine per (model, dtype, device): a queue, a worker thread, a model.

Reproducible by construction: a sample depends only on (request, sample index, seed), never on
which other requests shared its batch. Three things make that true on CPU:

- **Sampling** draws from a generator of the row's own, seeded from the request, the sample
  index and the seed (the Gumbel-max trick on the tempered, top-p-filtered distribution, then
  an argmax), never from torch's global generator.
- **Numerics**: a row's prompt is computed in a shape of its own. It is left-padded to a bucket
  length that depends on its own length only (``bucket_length``: 64, 96, 128, 192, 256, 384,
  512, 768, ...), only rows of one bucket are prefilled together, and never fewer than
  ``MIN_ROWS`` (copies fill the batch: below 4 rows the CPU kernels take other paths). The matrix
  products are row-invariant from 4 rows up, so a row's prompt logits are bitwise equal whatever
  shares its batch.
- **Decoding** is where a small model on a CPU spends its time (each step reads every weight
  once, ~0.1 s for 135M float32 parameters on two cores, for one row or 32), so all rows of a
  batch decode together, whatever their buckets: the buckets' caches are left-padded to the
  longest. Masked positions add exact zeros to attention, so a row's logits stay bitwise equal
  (``test_local_rows_decode_bitwise_alike_alone_and_merged_with_other_buckets``). Before, each
  bucket decoded on its own and a synthesis wave of four buckets paid four times the steps.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from music_core.errors import MusicError
from music_core.llm.errors import BadRequestError
from music_core.llm.types import Completion, ProviderCall, Usage


def bucket_length(n: int) -> int:
    """The padded length of an n-token prompt: powers of two and the halves between them (64,
    96, 128, 192, ...), so at most a third of a row is padding. Prefill dominates on a CPU, and
    with powers of two alone the offline simulators' ~300-token prompts were padded to 512."""
    power = 64
    while True:
        for size in (power, power * 3 // 2):
            if n <= size:
                return size
        power *= 2


DTYPES = ("auto", "bfloat16", "float32", "float16")


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str) -> str:
    """``auto``: bfloat16 where the hardware computes it natively (a CUDA GPU that supports it, a
    CPU with AVX512-BF16 or AMX), else float32. On a CPU without them bfloat16 is emulated: a
    135M model's matrix products ran 8x slower than in float32 on this project's AVX2 machines,
    which turned the offline run's 4-minute synthesis into an hour."""
    if dtype != "auto":
        return dtype
    import torch

    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        native = False
    return "bfloat16" if native else "float32"


_ENGINES: dict[tuple[str, str, str], LocalEngine] = {}
_LOCK = threading.Lock()


def engine_for(model: str, *, dtype: str, device: str, max_batch_size: int, linger_ms: float) -> LocalEngine:
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    key = (model, dtype, device)
    with _LOCK:
        if key not in _ENGINES:
            _ENGINES[key] = LocalEngine(model, dtype, device, max_batch_size, linger_ms)
        return _ENGINES[key]


@dataclass
class _Job:
    call: ProviderCall
    future: Any
    loop: Any
    text: str | None = None  # the prompt after the chat template
    bucket: int = 0          # its padded length: the rows of one bucket are prefilled together
    error: Exception | None = None


class LocalEngine:
    def __init__(self, model: str, dtype: str, device: str, max_batch_size: int, linger_ms: float):
        self.model_name = model
        self.dtype_name = dtype
        self.device_name = device
        self.max_batch_size = max(1, max_batch_size)
        self.linger_s = linger_ms / 1000.0
        self._queue: queue.Queue[_Job] = queue.Queue()
        self._pending: list[_Job] = []
        self._thread: threading.Thread | None = None
        self._loaded = threading.Event()
        self._load_error: BaseException | None = None
        self.model: Any = None
        self.cache_argument = "past_key_values"
        self.tokenizer: Any = None
        self.batches = 0  # for tests and benchmarks
        self.rows = 0
        self.padded_prompt_tokens = 0
        self.prompt_tokens = 0
        self.generated_tokens = 0
        self.generate_seconds = 0.0

    # ---- loading -----------------------------------------------------------------------------
    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from music_core.models import quiet_transformers, resolve_model

        quiet_transformers()
        path = resolve_model(self.model_name)
        device = self.device_name  # engine_for resolved "auto" for both, before the engine's key
        dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}.get(self.dtype_name)
        if dtype is None:
            raise MusicError(f"local provider: unknown dtype {self.dtype_name!r} ({', '.join(DTYPES)})")
        try:
            tok = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()  # type: ignore[arg-type]
        except OSError as exc:
            raise MusicError(f"local provider: cannot load model {self.model_name!r} ({path}): {exc}") from None
        if tok.chat_template is None:
            raise MusicError(f"local provider: model {self.model_name!r} has no chat template")
        tok.padding_side = "left"  # generation appends on the right
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        self.tokenizer, self.model, self.device = tok, model, device
        # transformers 5.x renamed past_key_values to cache (the old name warns, then goes)
        self.cache_argument = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        eos = {tok.eos_token_id}
        if model.generation_config.eos_token_id is not None:
            gen_eos = model.generation_config.eos_token_id
            eos |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        self.eos_ids = sorted(i for i in eos if i is not None)

    def _ensure_started(self) -> None:
        with _LOCK:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"music-local-{self.model_name}", daemon=True)
                self._thread.start()

    def submit(self, call: ProviderCall, future: Any, loop: Any) -> None:
        self._ensure_started()
        self._queue.put(_Job(call, future, loop))

    def count_tokens(self, text: str) -> int:
        if self.tokenizer is None:
            return max(1, len(text) // 4)
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # ---- worker ------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._load()
        except BaseException as exc:  # every request gets the load error instead of hanging
            self._load_error = exc
        self._loaded.set()
        while True:
            batch = self._next_batch()
            if self._load_error is not None:
                for job in batch:
                    self._resolve(job, exc=self._load_error)
                continue
            try:
                results = self._generate(batch)
            except Exception as exc:
                for job in batch:
                    self._resolve(job, exc=exc)
                continue
            for job, comps in zip(batch, results):
                self._resolve(job, comps)

    def _next_batch(self) -> list[_Job]:
        if not self._pending:
            self._pending.append(self._queue.get())
        # Linger briefly so that coroutines released together share one forward pass.
        try:
            while True:
                self._pending.append(self._queue.get(timeout=self.linger_s))
                if sum(j.call.n for j in self._pending) >= 4 * self.max_batch_size:
                    break
        except queue.Empty:
            pass
        for job in self._pending:
            if job.text is None:
                self._prepare(job)
        # Same sampling settings share a batch, whatever the prompts' lengths (each bucket is
        # prefilled on its own, see the module docstring); when more waits than fits, the
        # oldest go first.
        key = self._group_key(self._pending[0])
        batch: list[_Job] = []
        rows = 0
        for job in self._pending:
            if self._group_key(job) == key and (rows + job.call.n <= self.max_batch_size or not batch):
                batch.append(job)
                rows += job.call.n
        chosen = {id(j) for j in batch}
        self._pending = [j for j in self._pending if id(j) not in chosen]
        return batch

    def _prepare(self, job: _Job) -> None:
        if self._load_error is not None:
            job.text = ""
            return
        try:
            job.text = self.tokenizer.apply_chat_template(list(job.call.messages), tokenize=False,
                                                          add_generation_prompt=True)
        except Exception as exc:
            job.text = ""  # a batch of its own; _generate raises the error
            job.error = BadRequestError(f"local provider: chat template failed: {exc}")
            return
        job.bucket = bucket_length(len(self.tokenizer(job.text, add_special_tokens=False)["input_ids"]))

    @staticmethod
    def _group_key(job: _Job) -> tuple:
        # max_tokens and stop strings differ per row (see _RowLimits); sampling must not.
        # Rows that want log-probabilities batch apart: their logits are kept for every step.
        p = job.call.params
        return (p.temperature, p.top_p, p.top_logprobs, id(job) if job.error is not None else 0)

    @staticmethod
    def _resolve(job: _Job, comps: list[Completion] | None = None, exc: BaseException | None = None) -> None:
        def set_result() -> None:
            if job.future.done():
                return
            if exc is not None:
                job.future.set_exception(exc)
            else:
                job.future.set_result(comps)

        job.loop.call_soon_threadsafe(set_result)

    def _generate(self, batch: list[_Job]) -> list[list[Completion]]:
        import torch

        tok = self.tokenizer
        for job in batch:
            if job.error is not None:
                raise job.error
        rows = [_Row(j, job, k, _row_seed(job.call, k)) for j, job in enumerate(batch) for k in range(job.call.n)]
        by_bucket: dict[int, list[_Row]] = {}
        for row in rows:
            by_bucket.setdefault(row.job.bucket, []).append(row)
        t0 = time.perf_counter()
        with torch.inference_mode():
            prefilled = [self._prefill(group) for _, group in sorted(by_bucket.items())]
            if all(_plain_cache(p.cache) for p in prefilled):
                decoded = self._decode(_merged(prefilled, max(j.call.params.max_tokens for j in batch)))
            else:  # a cache we cannot pad (sliding windows, hybrid layers): one decode per bucket
                decoded = [r for p in prefilled for r in self._decode(p)]
        self.generate_seconds += time.perf_counter() - t0
        self.batches += 1
        self.rows += len(rows)
        results: list[list[Completion]] = [[] for _ in batch]
        eos = torch.tensor(self.eos_ids)
        for row, ids, step_logits in sorted(decoded, key=lambda d: (d[0].owner, d[0].index)):
            rp = row.job.call.params
            ids = ids[: rp.max_tokens]
            is_eos = torch.isin(ids, eos)
            hit = bool(is_eos.any())
            n_gen = int(is_eos.nonzero()[0, 0]) if hit else int(ids.numel())
            text = tok.decode(ids[:n_gen], skip_special_tokens=True)
            finish = "stop" if hit else "length"
            for s in rp.stop:
                cut = text.find(s)
                if cut >= 0:
                    text, finish = text[:cut], "stop"
            self.generated_tokens += n_gen
            first_of_job = not results[row.owner]
            top = (self._top_logprobs(step_logits, max(1, n_gen), rp.top_logprobs)
                   if rp.top_logprobs else None)
            results[row.owner].append(Completion(text.strip(), finish,
                                                 Usage(row.prompt_tokens if first_of_job else 0, n_gen),
                                                 top_logprobs=top))
        return results

    def _prefill(self, group: list[_Row]) -> _Prefilled:
        """One forward over the rows of one bucket, each left-padded to the bucket length, in a
        batch of at least MIN_ROWS (copies fill it): the shape a row is computed in depends on
        its own prompt only."""

        texts = [r.job.text for r in group]
        texts += [texts[0]] * max(0, MIN_ROWS - len(texts))
        # The template already holds the special tokens: adding them again would double BOS.
        enc = self.tokenizer(texts, return_tensors="pt", padding="max_length", max_length=group[0].job.bucket,
                             add_special_tokens=False).to(self.device)
        mask = enc["attention_mask"]
        lens = mask.sum(dim=1).tolist()
        for row, n in zip(group, lens):
            row.prompt_tokens = int(n)
        self.prompt_tokens += int(sum(lens[: len(group)]))
        self.padded_prompt_tokens += int(enc["input_ids"].numel())
        out = self.model(input_ids=enc["input_ids"], attention_mask=mask, position_ids=_positions(mask),
                         use_cache=True, logits_to_keep=1)
        return _Prefilled(group, out.logits[:, -1, :], _cache_of(out), mask)

    def _decode(self, pre: _Prefilled) -> list[tuple[_Row, Any, Any]]:
        """Sample every row to its limit in one loop; a row that is done gets pad tokens until the
        whole batch is. Returns each real row's generated ids (and raw logits per step when its
        request asked for log-probabilities)."""
        import torch

        rows = pre.rows
        params = rows[0].job.call.params  # one sampling setting per batch (_group_key)
        rp = [r.job.call.params for r in rows]
        pad = [rows[0]] * (pre.logits.shape[0] - len(rows))  # copies keep the batch's shape
        max_new = max(p.max_tokens for p in rp)
        limits = _RowLimits(0, [p.max_tokens for p in rp] + [max_new] * len(pad),
                            [p.stop for p in rp] + [()] * len(pad), self.tokenizer)
        sampler = (_SeededSampler(params.temperature, params.top_p, [r.seed for r in rows + pad])
                   if params.temperature > 0 else None)
        keep_logits = bool(params.top_logprobs)
        eos = torch.tensor(self.eos_ids, device=pre.logits.device)
        pad_id = self.tokenizer.pad_token_id
        logits, cache, mask = pre.logits, pre.cache, pre.mask
        generated = torch.empty((logits.shape[0], 0), dtype=torch.long, device=logits.device)
        unfinished = torch.ones(logits.shape[0], dtype=torch.bool, device=logits.device)
        steps: list[Any] = []
        for _ in range(max_new):
            if keep_logits:
                steps.append(logits.float())
            scores = sampler(generated, logits) if sampler is not None else logits
            nxt = torch.where(unfinished, scores.argmax(dim=-1), torch.full_like(unfinished, pad_id, dtype=torch.long))
            generated = torch.cat([generated, nxt[:, None]], dim=1)
            unfinished &= ~torch.isin(nxt, eos) & ~limits(generated, None)
            if not bool(unfinished.any()):
                break
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
            out = self.model(input_ids=nxt[:, None], attention_mask=mask, position_ids=mask.sum(dim=1, keepdim=True) - 1,
                             use_cache=True, **{self.cache_argument: cache})
            logits, cache = out.logits[:, -1, :], _cache_of(out)
        return [(row, generated[i].cpu(), [s[i] for s in steps] if keep_logits else None)
                for i, row in enumerate(rows)]

    def _top_logprobs(self, step_logits: Any, steps: int, k: int) -> list[dict[str, float]]:
        """The k likeliest tokens (decoded text) and their log-probabilities at each generated step."""
        out = []
        for logits in step_logits[:steps]:
            logp = logits.float().log_softmax(-1)
            values, ids = logp.topk(min(k, logp.shape[-1]))
            alts: dict[str, float] = {}
            for tid, lp in zip(ids.tolist(), values.tolist()):
                alts.setdefault(self.tokenizer.decode([tid]), lp)
            out.append(alts)
        return out


MIN_ROWS = 4  # below 4 rows the CPU kernels take other paths and a row's logits move (by ~3e-5 in float32)


@dataclass
class _Row:
    owner: int  # the job's index in its batch
    job: _Job
    index: int  # the sample index within the job
    seed: int
    prompt_tokens: int = 0


@dataclass
class _Prefilled:
    rows: list[_Row]  # the real rows; logits, cache and mask may hold copies after them
    logits: Any       # the last prompt position's logits, one row each
    cache: Any
    mask: Any


def _positions(mask: Any) -> Any:
    positions = mask.long().cumsum(-1) - 1
    return positions.masked_fill(mask == 0, 1)  # as transformers' generate does for left padding


def _cache_of(out: Any) -> Any:
    return out["cache"] if "cache" in out else out["past_key_values"]


def _plain_cache(cache: Any) -> bool:
    """A cache of full-attention layers only, whose keys and values can be left-padded."""
    return type(cache).__name__ == "DynamicCache" and all(type(layer).__name__ == "DynamicLayer"
                                                          for layer in getattr(cache, "layers", [None]))


def _merged(parts: list[_Prefilled], room: int) -> _Prefilled:
    """The prefilled buckets as one decode batch: each bucket's keys, values and mask left-padded
    to the longest, its copies dropped, and copies of the first row added back up to MIN_ROWS,
    with ``room`` positions reserved for the tokens to come.
    Masked positions add exact zeros to attention, so a row decodes the same whatever its padding
    (checked in tests/test_synth_trust.py)."""
    import torch
    from transformers import DynamicCache

    width = max(p.mask.shape[1] for p in parts)
    rows = [r for p in parts for r in p.rows]
    fill = max(0, MIN_ROWS - len(rows))

    def stack(tensors: list[Any], dim_len: int) -> Any:
        padded = [torch.nn.functional.pad(t, (0, 0) * (t.dim() - dim_len - 1) + (width - t.shape[dim_len], 0))
                  for t in tensors]
        out = torch.cat(padded)
        return torch.cat([out, out[:1].expand(fill, *out.shape[1:])]) if fill else out

    cache = DynamicCache()
    cache.layers = [_reserved_layer(stack([p.cache.layers[i].keys[: len(p.rows)] for p in parts], 2),
                                    stack([p.cache.layers[i].values[: len(p.rows)] for p in parts], 2), room)
                    for i in range(len(parts[0].cache.layers))]
    mask = stack([p.mask[: len(p.rows)] for p in parts], 1)
    logits = torch.cat([p.logits[: len(p.rows)] for p in parts])
    if fill:
        logits = torch.cat([logits, logits[:1].expand(fill, -1)])
    return _Prefilled(rows, logits, cache, mask)


def _reserved_layer(keys: Any, values: Any, room: int) -> Any:
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


def _row_seed(call: ProviderCall, k: int) -> int:
    """The seed of one row: the request (messages and sampling settings), the sample index and
    the endpoint's seed; nothing about the batch. max_tokens is left out on purpose, so a longer
    budget continues the same sample."""
    p = call.params
    blob = repr((call.messages, p.temperature, p.top_p, p.seed, call.sample_indices[k]))
    return int.from_bytes(hashlib.sha256(blob.encode()).digest()[:8], "little") % (2**63)


class _SeededSampler:
    """Temperature and top-p, then Gumbel noise from each row's own generator: the argmax that
    greedy decoding takes is then an exact sample from the filtered distribution, and row i's
    draws depend on row i's seed only."""

    def __init__(self, temperature: float, top_p: float | None, seeds: list[int]):
        import torch

        self.temperature = temperature
        self.top_p = top_p if top_p is not None and top_p < 1.0 else None
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        logits = scores.float() / self.temperature
        if self.top_p is None:
            logp = logits.log_softmax(dim=-1)
            vocab = logits.shape[-1]
            u = torch.stack([torch.rand(vocab, generator=g) for g in self.generators]).to(logits.device)
            return logp + _gumbel(u)
        # Noise only for the tokens top-p keeps (tens to hundreds, not the 49k of the vocabulary:
        # drawing for every token was a tenth of the offline engine's time), in the order of
        # their logits, so a row's draws still depend on its own distribution and seed alone.
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True, stable=True)
        probs = sorted_logits.softmax(dim=-1)
        keep = (probs.cumsum(dim=-1) - probs) <= self.top_p  # keep the first token past top_p
        logp_sorted = sorted_logits.masked_fill(~keep, float("-inf")).log_softmax(dim=-1)
        out = torch.full_like(logits, float("-inf"))
        for row, (g, k) in enumerate(zip(self.generators, keep.sum(dim=-1).tolist())):
            noise = _gumbel(torch.rand(k, generator=g).to(logits.device))
            out[row].scatter_(0, order[row, :k], logp_sorted[row, :k] + noise)
        return out


def _gumbel(u: Any) -> Any:
    import torch

    return -torch.log(-torch.log(u.clamp_(1e-10, 1.0 - 1e-7)))


class _RowLimits:
    """Per-row max_tokens and stop strings for one ``generate`` call: rows whose limit is hit
    are marked done (and then only padded), and the batch ends when every row is done."""

    def __init__(self, prompt_len: int, max_new: list[int], stops: list[tuple[str, ...]], tokenizer: Any):
        import torch

        self.prompt_len = prompt_len
        self.max_new = torch.tensor(max_new)
        self.stops = stops
        self.tokenizer = tokenizer
        self.any_stops = any(stops)

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        generated = input_ids.shape[1] - self.prompt_len
        done = generated >= self.max_new.to(input_ids.device)
        if self.any_stops:
            tail = input_ids[:, self.prompt_len:]
            for row, stops in enumerate(self.stops):
                if stops and not done[row]:
                    text = self.tokenizer.decode(tail[row, -16:], skip_special_tokens=True)
                    done[row] = any(s in text for s in stops)
        return done.to(torch.bool)
