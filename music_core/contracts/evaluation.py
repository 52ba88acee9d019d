"""Evaluation contracts: judges, model aliases, reward models as paths, and evaluators with their headline metrics."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ..data import Message
from ..errors import Problem  # defined beside the errors so the data checks need no contracts
from .base import ChatClient, Component
from .training import RewardScorer

if TYPE_CHECKING:
    from ..context import RunContext


@dataclass
class Verdict:
    """A judge's decision between conversations shown as A (first) and B (second).

    ``p_first``: the judge's probability that A is better (from its label token probabilities),
    where it has one. ``method`` says how the verdict was read: ``logprobs``, ``text``, or
    ``unparsed`` (no verdict could be read; ``winner`` is then ``tie``)."""

    winner: Literal["A", "B", "tie"]
    reasons: str = ""
    raw: str = ""
    p_first: float | None = None
    method: str = "text"


class ModelAlias(Component):
    """A short name for a model that this machine can load, as ``train.backbone``,
    ``models.<name>.model`` (local provider) or ``--rm`` take it. ``name`` is the alias
    (``minilm``) or a glob over what users write (``*.gguf``); ``resolve(requested)`` returns a
    local folder or file that transformers loads (materialising it first if it has to)."""

    @abstractmethod
    def resolve(self, requested: str) -> str: ...


class Judge(Component):
    """Compares two whole conversations that share a prefix. The core runs it in both orders
    (:func:`music_core.judging.judge_both_orders`). With probabilities in both orders the
    outcome is their position-debiased mean, a tie within ``tie_margin`` of 0.5; otherwise a
    disagreement between the orders is a tie."""

    options_key = "judge_options"

    tie_margin: float = 0.05

    @abstractmethod
    async def compare(self, first: list[Message], second: list[Message], llm: ChatClient,
                      prefix_len: int = 0) -> Verdict: ...


@dataclass
class EvalReport:
    """An evaluator's results: JSON-able ``results``, a Markdown section, and figure paths."""

    evaluator: str
    results: dict[str, Any]
    markdown: str
    figures: list[str] = field(default_factory=list)


class RewardModel(str):
    """A reward model handed to an evaluator: its folder or hub id (it *is* that string, so code
    that treats it as a path keeps working), its ``name`` in the run, and ``scorer(batch_size)``:
    the scorer loaded by the trainer that made the folder (recorded by the training stage; any
    other HF sequence-classifier through a trainer that loads_plain_folders), once per batch size."""

    name: str
    _load: Callable[[str, int | None], RewardScorer]
    _scorers: dict[int | None, RewardScorer]

    def __new__(cls, path: str, name: str = "", load: Callable[[str, int | None], RewardScorer] | None = None) -> RewardModel:
        obj = super().__new__(cls, path)
        obj.name = name
        if load is None:
            def load(path: str, batch_size: int | None) -> RewardScorer:
                raise RuntimeError(f"reward model {path!r} was made without a loader")
        obj._load, obj._scorers = load, {}
        return obj

    @property
    def path(self) -> str:
        return str.__str__(self)

    def scorer(self, batch_size: int | None = None) -> RewardScorer:
        """``batch_size``: conversations per forward pass (None: the trainer's choice)."""
        if batch_size not in self._scorers:
            self._scorers[batch_size] = self._load(self.path, batch_size)
        return self._scorers[batch_size]


class Evaluator(Component):
    """Evaluates reward models: ``run`` gets name -> :class:`RewardModel` (a path that loads its
    own scorer). ``command`` is its ``music eval`` name.

    ``config_class``: a dataclass of this evaluator's options (fields made with
    ``music_core.config.schema.option``), the section ``eval.<config_key>`` (default: the
    command). It exists in the config when the evaluator is selected (listed in
    ``eval.evaluators``, or run by ``music eval <command>``): typed, checked, shown by ``music
    config show``; ``self.section`` is the loaded section. ``check_config`` adds cross-field
    rules, ``describe`` the plan line, ``estimate`` the LLM calls a run will make (for ``music run
    --dry-run``), and ``skip_reason`` lets ``music run`` pass over an evaluator with nothing to do.
    """

    command: ClassVar[str] = ""
    config_class: ClassVar[type | None] = None
    config_key: ClassVar[str] = ""

    @classmethod
    def section_name(cls) -> str:
        return cls.config_key or cls.command or cls.name

    @property
    def section(self) -> Any:
        """This evaluator's options as loaded (None when it declares none)."""
        return getattr(self.ctx.config.eval, self.section_name(), None) if self.config_class else None

    @classmethod
    def check_config(cls, section: Any, cfg: Any) -> None:  # noqa: B027 (optional hook)
        """Cross-field rules on this evaluator's section (``cfg``: the whole config)."""

    @classmethod
    def describe(cls, section: Any) -> str:
        return cls.name

    @classmethod
    def estimate(cls, section: Any, cfg: Any, add: Any) -> None:  # noqa: B027 (optional hook)
        """Book the LLM calls a run will make: ``add(role, calls, samples, prompt_tokens_each)``."""

    @classmethod
    def skip_reason(cls, section: Any) -> str | None:
        """Why ``music run`` should pass over this evaluator (no data configured), or None."""
        return None

    #: the section's keys that name its data (a local path or a hub id), for the default preflight
    data_keys: ClassVar[tuple[str, ...]] = ("data", "path")

    @classmethod
    def preflight(cls, section: Any, ctx: RunContext) -> list[Problem]:
        """What its run would fail on that is known before ``music run``'s first call, each
        naming its ``eval.<section>.*`` key (asked only when :meth:`skip_reason` is None). The
        default: each of ``data_keys`` that holds a local path must exist. Override to check hub
        ids and required columns (:func:`music_core.preflight.check_data`) or seed sources
        (:func:`music_core.preflight.check_source`)."""
        from ..datacheck import check_data

        problems: list[Problem] = []
        for attr in cls.data_keys:
            value = getattr(section, attr, None)
            if isinstance(value, str) and value:
                problems += check_data(value, f"eval.{cls.section_name()}.{attr}", local_only=True)
        return problems

    @classmethod
    def headline(cls, result: dict[str, Any], rm: str) -> dict[str, dict[str, Any]]:
        """The metrics of reward model ``rm`` that a ``music sweep`` table shows for this
        evaluator, read from the results its run wrote (``results.json``, ``report.json``'s
        ``evaluations.<name>``): metric name -> ``{"value", "ci95": (low, high) or None, "group":
        the plot it joins, "hits": item id -> 1, 0.5 or 0, or None}``. ``hits`` pairs two
        variants' RMs on the items both scored (paired differences against the reference).
        The default: ``models[rm]["accuracy"]`` as ``{"accuracy", "ci95"}`` (what
        :func:`music_core.stats.accuracy` returns) gives ``"<command> accuracy"``, paired on
        ``item_hits[rm]``; any other shape gives nothing. Return ``{}`` for no headline."""
        return accuracy_headline(cls.command or cls.name, result, rm)

    @abstractmethod
    def run(self, reward_models: dict[str, RewardModel]) -> EvalReport: ...


def accuracy_headline(label: str, result: dict[str, Any], rm: str) -> dict[str, dict[str, Any]]:
    """:meth:`Evaluator.headline`'s default, for an evaluator labelled ``label``."""
    acc = ((result.get("models") or {}).get(rm) or {}).get("accuracy")
    if not isinstance(acc, dict) or acc.get("accuracy") is None:
        return {}
    return {f"{label} accuracy": {"value": acc["accuracy"], "ci95": acc.get("ci95"), "group": "accuracy",
                                  "hits": (result.get("item_hits") or {}).get(rm)}}
