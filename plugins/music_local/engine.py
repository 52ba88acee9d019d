"""One generation engine per (model, dtype, device): a queue, a worker thread, a model.

Reproducible by construction: a sample depends only on (request, sample index, seed), never on
which other requests shared its batch. Three things make that true on CPU:

- **Sampling** draws from a generator of the row's own, seeded from the request, the sample
  index and the seed (the Gumbel-max trick on the tempered, top-p-filtered distribution, then
  an argmax), never from torch's global generator.
- **Prompts** are prefilled one at a time, left-padded to a multiple of 16 tokens: the shape a
  prompt is computed in depends on that prompt alone (a request's samples share it).
- **Decoding** is where a small model on a CPU spends its time: each step reads every weight
  once, ~0.1 s for 135M float32 parameters on two cores, for one row or 32. So rows decode in
  one running batch (continuous batching, ``decoding.py``): a prefilled prompt joins it every
  ``JOIN_EVERY`` steps, a finished request is answered at once and its caller's next request
  can join. The matrix products are row-invariant from 4 rows up (fillers complete a smaller
  batch) and attention is bitwise alike over left padding by multiples of 16, so a row's logits
  are the same floats alone, beside other prompts, or joining halfway
  (tests/test_synth_trust.py). Before, prompts were batched by length buckets, each bucket
  decoded on its own, and a batch ran to its longest answer before anyone else could start.
"""

from __future__ import annotations

import inspect
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from music_core.errors import MusicError
from music_core.llm.errors import BadRequestError
from music_core.llm.types import Completion, ProviderCall, Usage

from .decoding import (
    JOIN_EVERY,
    MIN_ROWS,
    PAD_MULTIPLE,
    STOP_TAIL_TOKENS,
    Batch,
    Row,
    merged,
    next_tokens,
    plain_cache,
    positions,
    row_seed,
    seeded_generator,
)


def padded_length(n: int) -> int:
    """The length an n-token prompt is left-padded to: the next multiple of PAD_MULTIPLE, so that
    every row's padding in a decoding batch is a multiple of it too (see decoding.JOIN_EVERY)."""
    return -(-max(n, 1) // PAD_MULTIPLE) * PAD_MULTIPLE


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
    ids: list[int] = field(default_factory=list)  # the prompt's token ids
    bucket: int = 0          # its padded length (padded_length)
    error: Exception | None = None
    rows: list[Row] = field(default_factory=list)  # one per sample, while being decoded
    answered: bool = False


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
        batch: Batch | None = None
        while True:
            joinable = batch is None or batch.steps % JOIN_EVERY == 0
            jobs = self._take(wait=batch is None, rows=self._live_rows(batch)) if joinable else []
            if self._load_error is not None:
                for job in jobs:
                    self._resolve(job, exc=self._load_error)
                continue
            try:
                if jobs:
                    batch = self._admit(batch, jobs)
                if batch is not None:
                    batch = self._step(batch)
            except Exception as exc:  # a failed forward fails every request it held
                for job in {id(r.job): r.job for r in (batch.rows if batch else []) if r.job is not None}.values():
                    self._resolve(job, exc=exc)
                for job in jobs:
                    self._resolve(job, exc=exc)
                batch = None

    @staticmethod
    def _live_rows(batch: Batch | None) -> int:
        return 0 if batch is None else sum(r.live for r in batch.rows)

    def _take(self, *, wait: bool, rows: int) -> list[_Job]:
        """The waiting jobs that fit beside ``rows`` running ones, oldest first. With nothing
        running, block for one and linger briefly, so that coroutines released together are
        prefilled together."""
        if wait and not self._pending:
            self._pending.append(self._queue.get())
            try:
                while sum(j.call.n for j in self._pending) < self.max_batch_size:
                    self._pending.append(self._queue.get(timeout=self.linger_s))
            except queue.Empty:
                pass
        while True:
            try:
                self._pending.append(self._queue.get_nowait())
            except queue.Empty:
                break
        taken: list[_Job] = []
        for job in self._pending:
            if rows + job.call.n <= self.max_batch_size or (rows == 0 and not taken):
                taken.append(job)
                rows += job.call.n
        chosen = {id(j) for j in taken}
        self._pending = [j for j in self._pending if id(j) not in chosen]
        return taken

    def _prepare(self, job: _Job) -> None:
        try:
            job.text = self.tokenizer.apply_chat_template(list(job.call.messages), tokenize=False,
                                                          add_generation_prompt=True)
        except Exception as exc:
            job.error = BadRequestError(f"local provider: chat template failed: {exc}")
            return
        job.ids = self.tokenizer(job.text, add_special_tokens=False)["input_ids"]
        job.bucket = padded_length(len(job.ids))

    def _admit(self, batch: Batch | None, jobs: list[_Job]) -> Batch | None:
        """Prefill each job's prompt and merge its rows into the running batch."""
        import torch

        parts: list[Batch] = [] if batch is None else [batch]
        t0 = time.perf_counter()
        for job in jobs:
            self._prepare(job)
            if job.error is not None:
                self._resolve(job, exc=job.error)
                continue
            job.rows = [Row(job, k, seed, seeded_generator(seed))
                        for k, seed in ((k, row_seed(job.call, k)) for k in range(job.call.n))]
            with torch.inference_mode():
                parts.append(self._prefill(job))
            self.rows += len(job.rows)
        self.generate_seconds += time.perf_counter() - t0
        self.batches += 1
        if len(parts) == (batch is not None):
            return batch
        if all(plain_cache(p.cache) for p in parts):
            return merged(parts)
        # A cache that cannot be padded (sliding windows, hybrid layers): each part runs to its end.
        for part in parts[:-1]:
            running: Batch | None = part
            while running is not None:
                running = self._step(running)
        return parts[-1]

    def _prefill(self, job: _Job) -> Batch:
        """One forward over the job's prompt alone, left-padded to its padded length: the shape a
        prompt is computed in depends on that prompt only. Its samples share the result."""
        from transformers import DynamicCache

        ids = job.ids
        pad = job.bucket - len(ids)
        input_ids = self._tensor([[self.tokenizer.pad_token_id] * pad + ids])
        mask = self._tensor([[0] * pad + [1] * len(ids)])
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions(mask), use_cache=True,
                         logits_to_keep=1)
        n = len(job.rows)
        for row in job.rows:
            row.prompt_tokens, row.extent = len(ids), job.bucket
        self.prompt_tokens += len(ids)
        self.padded_prompt_tokens += job.bucket
        cache = _cache_of(out)
        if n > 1:
            shared, cache = cache, DynamicCache()
            for i, layer in enumerate(shared.layers):
                cache.update(layer.keys.expand(n, -1, -1, -1).contiguous(),
                             layer.values.expand(n, -1, -1, -1).contiguous(), i)
        return Batch(list(job.rows), out.logits[:, -1, :].expand(n, -1), cache, mask.expand(n, -1))

    def _tensor(self, rows: list[list[int]]) -> Any:
        import torch

        return torch.tensor(rows, dtype=torch.long, device=self.device)

    def _step(self, batch: Batch) -> Batch | None:
        """One token for every row; answer the jobs whose rows are all done; then one forward.
        Returns None when no row is left running."""
        import torch

        rows = batch.rows
        for i, row in enumerate(rows):
            if row.live and row.params.top_logprobs:
                row.step_logits.append(batch.logits[i].float())
        tokens = next_tokens(batch.logits, rows)
        for row, token in zip(rows, tokens):
            if row.live:
                self._append(row, token)
        for job in {id(r.job): r.job for r in rows if r.job is not None and r.finish is not None}.values():
            if all(r.finish is not None for r in job.rows) and not job.answered:
                job.answered = True
                self._resolve(job, [self._completion(r) for r in job.rows])
        live = sum(r.live for r in rows)
        if live == 0:
            return None
        if len(rows) - live >= max(MIN_ROWS, len(rows) // 2) and plain_cache(batch.cache):
            batch = merged([batch])  # drop the finished rows once they are half the batch
            rows = batch.rows
        pad_id = self.tokenizer.pad_token_id
        ids = torch.tensor([[r.tokens[-1] if r.live else pad_id] for r in rows], device=batch.mask.device)
        mask = torch.cat([batch.mask, batch.mask.new_ones((len(rows), 1))], dim=1)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=mask.sum(dim=1, keepdim=True) - 1,
                             use_cache=True, **{self.cache_argument: batch.cache})
        self.generate_seconds += time.perf_counter() - t0
        for row in rows:
            row.extent += 1
        return Batch(rows, out.logits[:, -1, :], _cache_of(out), mask, batch.steps + 1)

    def _append(self, row: Row, token: int) -> None:
        row.tokens.append(token)
        p = row.params
        if token in self.eos_ids:
            row.finish = "stop"
        elif len(row.tokens) >= p.max_tokens:
            row.finish = "length"
        elif p.stop:
            tail = self.tokenizer.decode(row.tokens[-STOP_TAIL_TOKENS:], skip_special_tokens=True)
            if any(s in tail for s in p.stop):
                row.finish = "stop"

    def _completion(self, row: Row) -> Completion:
        p = row.params
        ids = row.tokens[: p.max_tokens]
        n_gen = next((i for i, t in enumerate(ids) if t in self.eos_ids), len(ids))
        finish = "stop" if n_gen < len(ids) else "length"
        text = self.tokenizer.decode(ids[:n_gen], skip_special_tokens=True)
        for s in p.stop:
            cut = text.find(s)
            if cut >= 0:
                text, finish = text[:cut], "stop"
        self.generated_tokens += n_gen
        top = self._top_logprobs(row.step_logits, max(1, n_gen), p.top_logprobs) if p.top_logprobs else None
        return Completion(text.strip(), finish, Usage(row.prompt_tokens if row.index == 0 else 0, n_gen),
                          top_logprobs=top)

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


def _cache_of(out: Any) -> Any:
    return out["cache"] if "cache" in out else out["past_key_values"]
