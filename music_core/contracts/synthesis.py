"""Synthesis contracts: the user and assistant simulators, contrast strategies, seed sources and pair filters."""

from __future__ import annotations

import random
from abc import abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..data import Conversation, Message, PreferencePair
from ..errors import Problem  # defined beside the errors so the data checks need no contracts
from .base import ChatClient, Component

if TYPE_CHECKING:
    from ..config.schema import DataSourceConfig


@dataclass
class SimulatedTurn:
    """A simulator's output. ``ended`` is the user simulator's end-of-conversation signal;
    ``attempts`` counts tries until the text passed validation (1 = first try)."""

    text: str
    ended: bool = False
    attempts: int = 1
    info: dict[str, Any] = field(default_factory=dict)


class UserSimulator(Component):
    """Writes the user's next turn from a conversation that ends with an assistant turn."""

    options_key = "synth.user_simulator_options"

    @abstractmethod
    async def next_turn(self, history: list[Message], llm: ChatClient) -> SimulatedTurn: ...


class AssistantSimulator(Component):
    """Answers the last user turn. ``guidance`` is an extra instruction from a contrast
    strategy (the paper's "answer the modified instruction well, not the original")."""

    options_key = "synth.assistant_simulator_options"

    @abstractmethod
    async def respond(self, history: list[Message], llm: ChatClient, guidance: str | None = None) -> SimulatedTurn: ...


@dataclass
class ContrastRequest:
    """One rejected-branch turn to contrast: the branch's history before the user turn, the
    original instruction ``u_t``, and the tools to answer with."""

    history: list[Message]
    instruction: str
    turn: int
    assistant: AssistantSimulator
    assistant_llm: ChatClient
    rewrite_llm: ChatClient
    rng: random.Random


@dataclass
class ContrastOutcome:
    """The rejected answer; ``modified_instruction`` is ``u'_t`` (None when the strategy changes
    the context instead of the words), kept in provenance only. ``attempts``: tries this turn
    took (1 = the first was usable); ``noop``: the strategy had nothing to change (the report
    counts such turns; a fallback that changes nothing fails the turn). Both are stored per turn
    in the pair's meta. ``info`` is the strategy's own, stored beside them, never read by the core."""

    answer: str
    modified_instruction: str | None
    info: dict[str, Any] = field(default_factory=dict)
    attempts: int = 1
    noop: bool = False


class ContrastError(Exception):
    """A strategy could not produce a usable contrast after its retries; the pair becomes an
    error row, never a training pair."""


class ContrastStrategy(Component):
    """Produces the rejected branch's answer to one user turn.

    ``rewrite_calls_per_turn``: the calls it makes on the ``contrast`` role per turn before the
    rejected answer (the paper's instruction rewrite: 1). The dry-run plan counts them, and each
    adds a round in batch mode (the answer waits for the rewrite)."""

    options_key = "synth.strategy_options"

    rewrite_calls_per_turn: ClassVar[int] = 0

    @abstractmethod
    async def contrast(self, request: ContrastRequest) -> ContrastOutcome: ...


class SeedSource(Component):
    """Loads conversations (seeds, Best-of-N prompts) and/or preference pairs (original data)."""

    provides: ClassVar[tuple[str, ...]] = ("conversations",)
    needs_path: ClassVar[bool] = False  # True: a config without ``path`` is a problem the preflight names

    def require(self, what: str, key: str) -> SeedSource:
        """Stop at once, naming the config key, when this source cannot give ``what``."""
        if what not in self.provides:
            from ..errors import ConfigError

            raise ConfigError(f"config key '{key}': seed source {self.name!r} provides {list(self.provides)}, "
                              f"not {what}")
        return self

    @classmethod
    def required_columns(cls, cfg: DataSourceConfig, what: str) -> tuple[str, ...]:
        """The columns every record of ``cfg.path`` needs for ``what`` (``conversations`` or
        ``pairs``); ``"a|b"``: one of them. The preflight looks for them in the first rows."""
        return ()

    @classmethod
    def preflight(cls, cfg: DataSourceConfig, key: str, what: str) -> list[Problem]:
        """What loading ``what`` from ``cfg`` (the section at config ``key``) would fail on, known
        before the run: by default its ``path``, when set, must resolve (a local file or folder,
        or a hub dataset that is cached or reachable) with :meth:`required_columns` in its first
        rows. A source that reads no path returns []."""
        if not cfg.path:
            return [Problem(f"{key}.path", f"seed source {cls.name!r} needs a path (a local file or folder, or a "
                                           "hub id)")] if cls.needs_path else []
        from ..datacheck import check_data

        return check_data(cfg.path, f"{key}.path", split=cfg.split, columns=cls.required_columns(cfg, what))

    def load_conversations(self, cfg: DataSourceConfig) -> list[Conversation]:
        raise NotImplementedError(f"seed source {self.name!r} provides no conversations")

    def load_pairs(self, cfg: DataSourceConfig) -> list[PreferencePair]:
        raise NotImplementedError(f"seed source {self.name!r} provides no preference pairs")


@dataclass
class FilterVerdict:
    keep: bool
    reason: str = ""


class PairFilter(Component):
    """Decides whether a synthesized pair is written (e.g. a judge must prefer chosen)."""

    options_key = "synth.filter_options"

    @abstractmethod
    async def keep(self, pair: PreferencePair) -> FilterVerdict: ...
