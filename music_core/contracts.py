"""The contracts every component kind implements. Plugins subclass these; the registry checks
that what a plugin registers is one. Nothing here imports torch or a provider SDK.

Every component is constructed the same way, ``Component(options, ctx)``: ``options`` is the
component's own dict from the config (``synth.strategy_options``, ``train.head_options``, ...),
and ``ctx`` is the :class:`music_core.context.RunContext` of the run (config, registry, endpoints
by role). A component that declares ``options_class`` (a dataclass) has that dict checked
against it when the config loads (unknown keys and wrong types are errors naming the key);
the component base then builds it as ``self.opts`` (``music_core.config.options(cls, values,
key)``, with the kind's ``options_key`` naming where the dict sits in errors).
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from .data import Conversation, Message, PreferencePair
from .errors import Problem  # defined beside the errors so the data checks need no contracts
from .options import options as build_options

if TYPE_CHECKING:
    from .config.schema import DataSourceConfig, TrainConfig
    from .context import RunContext
    from .llm.types import Completion


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


# ---- synthesis ------------------------------------------------------------------------------

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
            from .errors import ConfigError

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
        from .datacheck import check_data

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


# ---- training -------------------------------------------------------------------------------

@dataclass
class SequenceSpans:
    """Where each sequence lies in a flat ``[tokens, hidden]`` tensor (packed, or a padded batch
    flattened): ``starts``/``ends`` (exclusive) and the last token of each assistant turn."""

    starts: list[int]
    ends: list[int]
    turn_ends: list[list[int]]

    def __len__(self) -> int:
        return len(self.starts)


class RewardHead(Component):
    """Maps a backbone's hidden states to one scalar reward per sequence, and says how the
    trained model is exported so that plain transformers computes the same reward.

    Write the head's computation in a self-contained module that imports only ``torch`` and
    set it as ``code``; it defines ``build(hidden_size, settings) -> nn.Module`` and
    ``reward(module, hidden, spans, settings) -> [len(spans)] float32``. The head's own
    ``build``/``reward`` run that module with ``settings()`` (the head's options the
    computation needs, JSON-serialisable). Export forms, tried in order:

    1. ``standard_weights(module, model)``: the weights that make the backbone's own
       ``AutoModelForSequenceClassification`` (``model``, freshly built) compute this head's
       reward; the export then loads without remote code. ``None``: no such form for this
       backbone.
    2. ``code``: the export ships the module's source as ``music_head.py`` with
       ``modeling_music_rm.py`` (loaded with ``trust_remote_code=True``), which rebuilds the
       spans from the attention mask and calls the same ``reward``.

    A head with neither is refused before training. Every export is reloaded and checked
    against the trainer's own scores (1e-4); one that does not match is refused, never saved.
    """

    options_key = "train.head_options"

    # The module with build(hidden_size, settings) and reward(module, hidden, spans, settings), or
    # its dotted name (imported on first use, so that loading the plugin does not import torch).
    code: ClassVar[Any] = None

    def settings(self) -> dict[str, Any]:
        """What ``code`` needs besides the weights (saved in the exported config)."""
        return {}

    def code_module(self) -> Any:
        """``code`` as a module (None when the head has none)."""
        if isinstance(self.code, str):
            import importlib

            return importlib.import_module(self.code)
        return self.code

    def build(self, hidden_size: int) -> Any:
        """Return the trainable ``torch.nn.Module`` of the head."""
        if self.code is None:
            raise NotImplementedError(f"reward head {self.name!r}: set `code` or override build()")
        return self.code_module().build(hidden_size, self.settings())

    def reward(self, module: Any, hidden: Any, spans: SequenceSpans) -> Any:
        """Rewards ``[len(spans)]`` (float32) from ``hidden`` ``[tokens, hidden_size]``."""
        if self.code is None:
            raise NotImplementedError(f"reward head {self.name!r}: set `code` or override reward()")
        return self.code_module().reward(module, hidden, spans, self.settings())

    def standard_weights(self, module: Any, model: Any) -> dict[str, Any] | None:
        """State-dict entries of ``model`` (the backbone's ``*ForSequenceClassification``,
        num_labels=1) that make it compute this head's reward, or None."""
        return None


@dataclass
class TrainResult:
    """What a trainer hands the training stage. ``metrics``: everything it measured (kept in its
    own files). ``summary``: the few numbers a run report shows, label -> value, in order
    (``{"held-out accuracy": 0.84, "steps": 60}``); ``description``: one line saying what was
    trained (``"last-token head on minilm"``). The stage records both beside the trainer's name
    in the RM folder's ``music_trainer.json``; reports read that, never a trainer's own files."""

    model_dir: str
    metrics: dict[str, Any]
    summary: dict[str, Any] = field(default_factory=dict)
    description: str = ""


@dataclass
class Seen:
    """What a reward model saw of one conversation it scored. ``cut``: something was cut away to
    fit its ``max_length``; ``first_turn_cut``: the whole first user turn is gone (a defect there
    cannot be scored); ``tokens``: the length it was scored at."""

    tokens: int
    cut: bool = False
    first_turn_cut: bool = False


class RewardScorer(ABC):
    """A trained reward model: conversations in, one scalar each out."""

    @abstractmethod
    def score(self, conversations: list[list[Message]]) -> list[float]: ...

    def score_seen(self, conversations: list[list[Message]]) -> tuple[list[float], list[Seen] | None]:
        """Rewards and what the model saw of each conversation (None: this scorer cannot say;
        reports then say the truncation is unknown). Override to report truncation."""
        return self.score(conversations), None

    def limits(self) -> dict[str, Any]:
        """The lengths that decide truncation, for reports: ``max_length`` (what conversations are
        cut to) and ``backbone_max_length`` (the model's own limit), where known."""
        return {}


class Trainer(Component):
    """Trains a reward model from pairs and loads what it saved for scoring.

    ``config_class``: the ``train`` section when this trainer is selected, a dataclass that
    extends :class:`music_core.config.schema.TrainConfig` with the trainer's own options (declared
    with ``music_core.config.schema.option``); the config is assembled with it at load time, so
    its keys are typed, checked, shown by ``music config show`` and absent when another trainer
    is selected. ``check_config`` adds rules types cannot express (raise ConfigError naming the key).
    ``loads_plain_folders = True`` when :meth:`load_scorer` also reads reward models no trainer
    of this framework made (a Hugging Face sequence-classification folder or hub id): evaluation
    loads such folders through the first registered trainer that says so.
    """

    config_class: ClassVar[type | None] = None  # None: the plain TrainConfig (kept unimported here: no circle)
    loads_plain_folders: ClassVar[bool] = False

    @classmethod
    def check_config(cls, cfg: TrainConfig) -> None:  # noqa: B027 (optional hook)
        """Cross-field rules on this trainer's ``train`` section."""

    @classmethod
    def describe(cls, cfg: TrainConfig) -> str:
        """One line for plans and reports: what this trainer will train with ``cfg``."""
        return cls.name

    @classmethod
    def preflight(cls, cfg: TrainConfig) -> list[Problem]:
        """What training with this ``train`` section would fail on that is known before the run's
        first call (the memory plan does not fit the GPUs, the backbone is not on this machine);
        ``music run`` refuses to start on any. Each problem names its ``train.*`` key."""
        return []

    @abstractmethod
    def train(self, cfg: TrainConfig) -> TrainResult: ...

    @abstractmethod
    def load_scorer(self, model_dir: str, batch_size: int | None = None) -> RewardScorer:
        """The scorer of a folder this trainer wrote; ``batch_size``: conversations per forward
        pass as the evaluator asks (None: the trainer's own choice)."""


# ---- evaluation -----------------------------------------------------------------------------

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
        from .datacheck import check_data

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


# ---- sweeps -----------------------------------------------------------------------------------

@dataclass
class VariantJob:
    """One variant of a sweep, as a launcher starts it: a whole ``music run`` in its own process."""

    name: str
    argv: list[str]            # the command line (``[python, -m, music_core, run, ...]``)
    cwd: str
    env: dict[str, str]
    log: str                   # where its output goes


class Launcher(Component):
    """Starts a sweep's variants, each as its own process, and waits for them (Hydra's launcher
    plugins are the model: the sweep knows variants, the launcher only how to start a process).
    Variants that share a step wait for it on their own: the launcher need not order them."""

    options_key = "sweep.launcher_options"

    @abstractmethod
    def launch(self, jobs: list[VariantJob], parallel: int) -> list[int]:
        """Run every job, at most ``parallel`` at once where the launcher controls that; return
        each job's exit status, in the jobs' order."""
