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
# One module per room (base, synthesis, training, evaluation, sweep); every name stays
# importable from ``music_core.contracts``.
from ..errors import Problem  # noqa: F401 (importable from here, as before)
from .base import (  # noqa: F401
    ChatClient,
    Component,
)
from .evaluation import (  # noqa: F401
    EvalReport,
    Evaluator,
    Judge,
    ModelAlias,
    RewardModel,
    Verdict,
    accuracy_headline,
)
from .sweep import (  # noqa: F401
    Launcher,
    VariantJob,
)
from .synthesis import (  # noqa: F401
    AssistantSimulator,
    ContrastError,
    ContrastOutcome,
    ContrastRequest,
    ContrastStrategy,
    FilterVerdict,
    PairFilter,
    SeedSource,
    SimulatedTurn,
    UserSimulator,
)
from .training import (  # noqa: F401
    RewardHead,
    RewardScorer,
    Seen,
    SequenceSpans,
    Trainer,
    TrainResult,
)
