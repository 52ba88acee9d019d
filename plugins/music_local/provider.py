"""The ``local`` chat provider. Requests from many concurrent coroutines meet in one queue per
model; a worker thread batches them (prefilled per prompt-length bucket, decoded together),
which is what makes a 135M model on two cores useful (~20 tok/s alone, ~250 tok/s at batch 32).

Endpoint ``model``: ``smollm2-135m`` (default), a local HF folder or a ``.gguf`` file.
Options: :class:`LocalOptions`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from music_core.config import options
from music_core.config.schema import OptionError, option
from music_core.llm.provider import ChatProvider
from music_core.llm.types import Completion, ProviderCall

from .engine import DTYPES, engine_for, resolve_device, resolve_dtype


@dataclass
class LocalOptions:
    """``models.<name>.options`` of a ``local`` endpoint."""

    dtype: str = option("auto", "weights and compute: auto (bfloat16 where the hardware computes it natively, "
                                "else float32), bfloat16, float32 or float16")
    device: str = option("auto", "cpu, cuda or auto")
    max_batch_size: int = option(32, "most rows (samples) decoded together")
    linger_ms: float = option(20.0, "how long the worker waits for a batch to fill")

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise OptionError("dtype", f"is {self.dtype!r}; use {', '.join(DTYPES)}")
        if self.max_batch_size < 1:
            raise OptionError("max_batch_size", "must be at least 1")


class LocalProvider(ChatProvider):
    name = "local"
    supports_n = True
    supports_seed = True  # every sample is seeded by (request, index, seed), whatever its batch
    supports_logprobs = True  # top_logprobs from the model's logits at each generated step
    transport_options = frozenset({"max_batch_size", "linger_ms"})
    options_class = LocalOptions
    requires_api_key = False
    enforce_timeout = False  # requests wait in the batch queue; a wall-clock timeout would misfire

    def __init__(self, endpoint):
        super().__init__(endpoint)
        self._engine = None

    def local_options(self) -> LocalOptions:
        return options(LocalOptions, self.endpoint.options, "models.<local endpoint>.options")

    def engine(self):
        if self._engine is None:
            opts = self.local_options()
            self._engine = engine_for(self.endpoint.model, dtype=opts.dtype, device=opts.device,
                                      max_batch_size=opts.max_batch_size, linger_ms=opts.linger_ms)
        return self._engine

    def cache_identity(self) -> dict[str, Any]:
        # "auto" computes in bfloat16 on one machine and float32 on another, and the answers
        # differ: the cache must name what was computed, not what was asked for.
        identity = super().cache_identity()
        opts = self.local_options()
        device = resolve_device(opts.device)
        identity["options"] = {**identity["options"], "dtype": resolve_dtype(opts.dtype, device), "device": device}
        return identity

    async def generate(self, call: ProviderCall) -> list[Completion]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        self.engine().submit(call, fut, loop)
        return await fut

    def count_tokens(self, text: str) -> int:
        return self.engine().count_tokens(text)
