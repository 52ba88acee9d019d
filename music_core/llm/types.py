"""Provider-neutral chat types: what goes to a provider and what comes back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..data import Message


@dataclass(frozen=True)
class SamplingParams:
    """Resolved sampling parameters of one wire call (endpoint defaults already applied)."""

    temperature: float
    max_tokens: int
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    top_logprobs: int | None = None  # ask for the k likeliest tokens at every generated position

    def as_key(self) -> dict[str, Any]:
        key = {"temperature": self.temperature, "max_tokens": self.max_tokens, "top_p": self.top_p,
               "stop": list(self.stop), "seed": self.seed}
        if self.top_logprobs:  # only when asked: the keys of every cached answer stay as they were
            key["top_logprobs"] = self.top_logprobs
        return key


@dataclass(frozen=True)
class ProviderCall:
    """One call a provider must make: ``n`` samples of ``messages``. ``sample_indices`` say which
    samples these are, so that a provider with a seed can make sample i reproducible."""

    messages: tuple[Message, ...]
    params: SamplingParams
    sample_indices: tuple[int, ...] = (0,)
    key: str = ""  # the cache key of the first sample: names the call in a batch job (custom_id)

    @property
    def n(self) -> int:
        return len(self.sample_indices)


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens)

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Completion:
    text: str
    finish_reason: str = "stop"
    usage: Usage = field(default_factory=Usage)  # this sample's share of the call's usage
    cached: bool = False
    # with SamplingParams.top_logprobs: per generated position, the likeliest tokens (as text)
    # and their log-probabilities under the model
    top_logprobs: list[dict[str, float]] | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"text": self.text, "finish_reason": self.finish_reason,
                             "prompt_tokens": self.usage.prompt_tokens, "completion_tokens": self.usage.completion_tokens}
        if self.top_logprobs is not None:
            d["top_logprobs"] = self.top_logprobs
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any], cached: bool = True) -> Completion:
        return cls(d["text"], d.get("finish_reason", "stop"),
                   Usage(d.get("prompt_tokens", 0), d.get("completion_tokens", 0)), cached, d.get("top_logprobs"))


def split_usage(total: Usage, n: int) -> list[Usage]:
    """Share a multi-sample call's usage among its samples: the prompt is paid once, so it goes
    to the first; completions are split evenly (remainder to the first)."""
    if n <= 1:
        return [total]
    each, rest = divmod(total.completion_tokens, n)
    return [Usage(total.prompt_tokens if i == 0 else 0, each + (rest if i == 0 else 0)) for i in range(n)]
