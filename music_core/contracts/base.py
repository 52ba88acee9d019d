"""Component base and the chat client every LLM-backed component receives."""

from __future__ import annotations

from abc import ABC
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from ..data import Message
from ..options import options as build_options

if TYPE_CHECKING:
    from ..context import RunContext
    from ..llm.types import Completion


class ChatClient(Protocol):
    """What components receive for a role (``ctx.role(name)``): chat completions, booked to
    that role, through the shared cache, retries and rate limits."""

    @property
    def supports_logprobs(self) -> bool: ...

    async def chat(self, messages: list[Message], *, n: int = 1, sample_index: int = 0,
                   **overrides: Any) -> list[Completion]: ...

    async def text(self, messages: list[Message], *, sample_index: int = 0, **overrides: Any) -> str: ...

    def count_tokens(self, text: str) -> int: ...


class Component(ABC):  # noqa: B024 (kinds add the abstract methods)
    """Base of every registered component: a ``name`` and the uniform constructor."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: a dataclass of this component's options (fields made with ``music_core.config.schema.option``);
    #: the config loader validates the component's ``*_options`` dict against it
    options_class: ClassVar[type | None] = None
    #: where this kind's options dict sits in the config, for errors (``synth.strategy_options``)
    options_key: ClassVar[str] = "options"

    def __init__(self, options: dict[str, Any] | None = None, ctx: RunContext | None = None):
        self.options = dict(options or {})
        self._ctx = ctx
        if self.options_class is not None:  # else None, or what a subclass builds itself
            self.opts: Any = build_options(self.options_class, options, self.options_key)

    @property
    def ctx(self) -> RunContext:
        """The run this component serves (config, registry, role clients)."""
        if self._ctx is None:
            raise RuntimeError(f"{type(self).__name__} ({self.name!r}) was built without a run context; "
                               "create it through RunContext.component(...)")
        return self._ctx

    @property
    def has_context(self) -> bool:
        return self._ctx is not None
