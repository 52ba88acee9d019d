"""Training contracts: reward heads, scorers (what an RM could see: ``Seen``) and trainers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..data import Message
from ..errors import Problem  # defined beside the errors so the data checks need no contracts
from .base import Component

if TYPE_CHECKING:
    from ..config.schema import TrainConfig


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
