"""One generation engine per (model, dtype, device): a queue, a worker thread, a model."""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from music_core.errors import MusicError
from music_core.llm.errors import BadRequestError
from music_core.llm.types import Completion, ProviderCall, Usage

_ENGINES: dict[tuple[str, str, str], LocalEngine] = {}
_LOCK = threading.Lock()


def engine_for(model: str, *, dtype: str, device: str, max_batch_size: int, linger_ms: float) -> LocalEngine:
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

        from music_core.assets import quiet_transformers, resolve_model

        quiet_transformers()
        path = resolve_model(self.model_name)
        dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}.get(self.dtype_name)
        if dtype is None:
            raise MusicError(f"local provider: unknown dtype {self.dtype_name!r} (bfloat16, float32, float16)")
        device = self.device_name
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            tok = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
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
        # Same sampling settings share a batch. When more is waiting than fits, take the oldest
        # job and the jobs closest to it in prompt length: left padding to the longest prompt
        # is paid by every row.
        key = self._group_key(self._pending[0])
        same = [j for j in self._pending if self._group_key(j) == key]
        if sum(j.call.n for j in same) > self.max_batch_size:
            anchor = self._size(same[0])
            same.sort(key=lambda j: abs(self._size(j) - anchor))
        batch, rows = [], 0
        for job in same:
            if rows + job.call.n <= self.max_batch_size or not batch:
                batch.append(job)
                rows += job.call.n
        chosen = {id(j) for j in batch}
        self._pending = [j for j in self._pending if id(j) not in chosen]
        return batch

    @staticmethod
    def _size(job: _Job) -> int:
        return sum(len(m["content"]) for m in job.call.messages)

    @staticmethod
    def _group_key(job: _Job) -> tuple:
        # max_tokens and stop strings differ per row (see _RowLimits); sampling must not.
        p = job.call.params
        return (p.temperature, p.top_p)

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
        from transformers import StoppingCriteriaList

        tok, model = self.tokenizer, self.model
        prompts, owners = [], []
        for j, job in enumerate(batch):
            try:
                text = tok.apply_chat_template(list(job.call.messages), tokenize=False, add_generation_prompt=True)
            except Exception as exc:
                raise BadRequestError(f"local provider: chat template failed: {exc}") from None
            for _ in range(job.call.n):
                prompts.append(text)
                owners.append(j)
        # The template already holds the special tokens: adding them again would double BOS.
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        p = batch[0].call.params
        row_params = [batch[j].call.params for j in owners]
        limits = _RowLimits(enc["input_ids"].shape[1], [rp.max_tokens for rp in row_params],
                            [rp.stop for rp in row_params], tok)
        kwargs: dict[str, Any] = {"max_new_tokens": max(rp.max_tokens for rp in row_params),
                                  "pad_token_id": tok.pad_token_id, "eos_token_id": self.eos_ids,
                                  "stopping_criteria": StoppingCriteriaList([limits])}
        if p.temperature > 0:
            kwargs.update(do_sample=True, temperature=p.temperature, top_p=p.top_p if p.top_p is not None else 1.0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        # Reproducible for a given batch: seed from the batch's content and sample indices.
        digest = hashlib.sha256(repr([(job.call.messages, job.call.sample_indices, job.call.params.seed) for job in batch]).encode())
        torch.manual_seed(int.from_bytes(digest.digest()[:8], "little") % (2**63))
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**enc, **kwargs)
        self.generate_seconds += time.perf_counter() - t0
        new = out[:, enc["input_ids"].shape[1]:]
        self.batches += 1
        self.rows += len(prompts)
        if os.environ.get("MUSIC_LOCAL_DEBUG"):
            print(f"[local] batch {self.batches}: {len(prompts)} rows, prompt {enc['input_ids'].shape[1]} tok padded, "
                  f"{time.perf_counter() - t0:.2f} s", flush=True)
        results: list[list[Completion]] = [[] for _ in batch]
        prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
        self.prompt_tokens += int(sum(prompt_lens))
        self.padded_prompt_tokens += int(enc["input_ids"].numel())
        eos = torch.tensor(self.eos_ids, device=new.device)
        for row, j in enumerate(owners):
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
            results[j].append(Completion(text.strip(), finish,
                                         Usage(int(prompt_lens[row]) if first_of_job else 0, n_gen)))
        return results


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
