"""One generation engine per (model, dtype, device): a queue, a worker thread, a model.

Reproducible by construction: a sample depends only on (request, sample index, seed), never on
which other requests shared its batch. Two things make that true on CPU:

- **Sampling** draws from a generator of the row's own, seeded from the request, the sample
  index and the seed (the Gumbel-max trick on the tempered, top-p-filtered distribution, then
  an argmax), never from torch's global generator.
- **Numerics**: a row is always computed in the same shape. Its prompt is left-padded to a
  bucket length that depends on its own length only (``bucket_length``: 64, 96, 128, 192,
  256, 384, 512, 768, ...), only rows of one bucket share a batch, and a batch never has a single
  row (a lone row, which takes another kernel path, runs beside a copy of itself). The matrix
  products are row-invariant in the batch size (checked), so a row's logits are bitwise equal
  whatever shares its batch. Measured on bf16 CPU: padding to the batch's longest prompt moves
  a row's logits by up to 0.4 and its text drifts; padding to a multiple of 64 still differs
  once the batch reaches 512 tokens (the kernels' blocking changes with the length).
"""

from __future__ import annotations

import hashlib
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
    bucket: int = 0          # its padded length; only jobs of one bucket share a batch
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
        # Same sampling settings and the same padded length share a batch (see the module
        # docstring). When more is waiting than fits, take the oldest jobs first.
        key = self._group_key(self._pending[0])
        same = [j for j in self._pending if self._group_key(j) == key]
        if sum(j.call.n for j in same) > self.max_batch_size:
            anchor = self._size(same[0])
            same.sort(key=lambda j: abs(self._size(j) - anchor))
        batch: list[_Job] = []
        rows = 0
        for job in same:
            if rows + job.call.n <= self.max_batch_size or not batch:
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
    def _size(job: _Job) -> int:
        return sum(len(m["content"]) for m in job.call.messages)

    @staticmethod
    def _group_key(job: _Job) -> tuple:
        # max_tokens and stop strings differ per row (see _RowLimits); sampling must not.
        # Rows that want log-probabilities batch apart: their logits are kept for every step.
        p = job.call.params
        return (p.temperature, p.top_p, p.top_logprobs, job.bucket, id(job) if job.error is not None else 0)

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
        from transformers import LogitsProcessorList, StoppingCriteriaList

        tok, model = self.tokenizer, self.model
        for job in batch:
            if job.error is not None:
                raise job.error
        prompts, owners, row_seeds = [], [], []
        for j, job in enumerate(batch):
            for k in range(job.call.n):
                prompts.append(job.text)
                owners.append(j)
                row_seeds.append(_row_seed(job.call, k))
        real_rows = len(prompts)
        if real_rows == 1:  # a batch of one takes another kernel path: run it beside a copy
            prompts.append(prompts[0])
            owners.append(owners[0])
            row_seeds.append(row_seeds[0])
        # The template already holds the special tokens: adding them again would double BOS.
        enc = tok(prompts, return_tensors="pt", padding="max_length", max_length=batch[0].bucket,
                  add_special_tokens=False).to(self.device)
        p = batch[0].call.params
        row_params = [batch[j].call.params for j in owners]
        limits = _RowLimits(enc["input_ids"].shape[1], [rp.max_tokens for rp in row_params],
                            [rp.stop for rp in row_params], tok)
        kwargs: dict[str, Any] = {"max_new_tokens": max(rp.max_tokens for rp in row_params),
                                  "pad_token_id": tok.pad_token_id, "eos_token_id": self.eos_ids,
                                  "stopping_criteria": StoppingCriteriaList([limits]),
                                  "do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        if p.temperature > 0:  # sampled by the rows' own generators, then an argmax
            kwargs["logits_processor"] = LogitsProcessorList([_SeededSampler(p.temperature, p.top_p, row_seeds)])
        want_logprobs = p.top_logprobs or 0
        if want_logprobs:  # the model's own distribution at each step, before the sampler's noise
            kwargs.update(output_logits=True, return_dict_in_generate=True)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**enc, **kwargs)
        self.generate_seconds += time.perf_counter() - t0
        step_logits = out.logits if want_logprobs else None
        out = out.sequences if want_logprobs else out
        new = out[:, enc["input_ids"].shape[1]:]
        self.batches += 1
        self.rows += real_rows
        new = new[:real_rows]
        results: list[list[Completion]] = [[] for _ in batch]
        prompt_lens = enc["attention_mask"].sum(dim=1).tolist()[:real_rows]
        self.prompt_tokens += int(sum(prompt_lens))
        self.padded_prompt_tokens += int(enc["input_ids"].numel())
        eos = torch.tensor(self.eos_ids, device=new.device)
        for row, j in enumerate(owners[:real_rows]):
            ids = new[row][: row_params[row].max_tokens]
            is_eos = torch.isin(ids, eos)
            hit = bool(is_eos.any())
            n_gen = int(is_eos.nonzero()[0, 0]) if hit else int(ids.numel())
            text = tok.decode(ids[:n_gen], skip_special_tokens=True)
            finish = "stop" if hit else "length"
            for s in row_params[row].stop:
                cut = text.find(s)
                if cut >= 0:
                    text, finish = text[:cut], "stop"
            self.generated_tokens += n_gen
            first_of_job = not results[j]
            top = self._top_logprobs(step_logits, row, max(1, n_gen), want_logprobs) if want_logprobs else None
            results[j].append(Completion(text.strip(), finish,
                                         Usage(int(prompt_lens[row]) if first_of_job else 0, n_gen), top_logprobs=top))
        return results

    def _top_logprobs(self, step_logits: Any, row: int, steps: int, k: int) -> list[dict[str, float]]:
        """The k likeliest tokens (decoded text) and their log-probabilities at each generated step."""
        out = []
        for logits in step_logits[:steps]:
            logp = logits[row].float().log_softmax(-1)
            values, ids = logp.topk(min(k, logp.shape[-1]))
            alts: dict[str, float] = {}
            for tid, lp in zip(ids.tolist(), values.tolist()):
                alts.setdefault(self.tokenizer.decode([tid]), lp)
            out.append(alts)
        return out


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
