"""Every extension point of ``music``, as pluggy hook specifications (project name ``music``).

All hooks are *registry hooks*: the core calls each plugin's implementation once, when
plugins are first needed, with a ``register`` callback that the core owns. The callback takes
the component (a class, or a click command for ``register_commands``) and an optional ``name``
that defaults to the component's ``name`` attribute. The core checks the type, rejects a name
that another plugin already registered (naming both plugins) and records which plugin
registered what (``music plugins list``).

A plugin module is any module with ``@hookimpl`` functions; ship it as a package with an
entry point in the ``music`` group::

    [project.entry-points.music]
    my_plugin = "my_plugin"

Import heavy dependencies (SDKs, torch) inside the component's methods, not at module level:
``music --help`` loads every plugin.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("music")
hookimpl = pluggy.HookimplMarker("music")

Register = Callable[..., None]
"""``register(component, name=None)``."""


@hookspec
def register_chat_providers(register: Register) -> None:
    """Register chat providers: subclasses of :class:`music_core.llm.provider.ChatProvider`.

    Called once when plugins load. ``register(ProviderClass)``; the provider's ``name`` is
    what an endpoint's ``provider:`` key selects.

    :param register: ``register(cls: type[ChatProvider], name: str | None = None)``

    Example::

        @hookimpl
        def register_chat_providers(register):
            register(EchoProvider)  # EchoProvider.name == "echo"
    """


@hookspec
def register_simulators(register: Register) -> None:
    """Register user and assistant simulators: subclasses of
    :class:`music_core.contracts.UserSimulator` or :class:`~music_core.contracts.AssistantSimulator`.

    Called once when plugins load. ``synth.user_simulator`` and ``synth.assistant_simulator``
    select them by name.

    :param register: ``register(cls, name: str | None = None)``

    Example::

        @hookimpl
        def register_simulators(register):
            register(TerseUser)  # a UserSimulator with name = "terse"
    """


@hookspec
def register_contrast_strategies(register: Register) -> None:
    """Register contrast strategies: subclasses of :class:`music_core.contracts.ContrastStrategy`.

    Called once when plugins load. ``synth.strategy`` selects one by name; it produces the
    rejected branch's answer at every contrasted turn.

    :param register: ``register(cls: type[ContrastStrategy], name: str | None = None)``

    Example::

        @hookimpl
        def register_contrast_strategies(register):
            register(ShoutingContrast)  # name = "shouting"
    """


@hookspec
def register_seed_sources(register: Register) -> None:
    """Register seed sources: subclasses of :class:`music_core.contracts.SeedSource` that load
    seed conversations, Best-of-N prompts or original preference pairs.

    Called once when plugins load. ``seeds.source``, ``mix.original.source`` and
    ``eval.bon.prompt_sets.<name>.source`` select them by name.

    :param register: ``register(cls: type[SeedSource], name: str | None = None)``

    Example::

        @hookimpl
        def register_seed_sources(register):
            register(MyCorpus)  # name = "my-corpus", provides = ("conversations",)
    """


@hookspec
def register_pair_filters(register: Register) -> None:
    """Register pair filters: subclasses of :class:`music_core.contracts.PairFilter` that decide
    whether a synthesized pair is kept; the synthesis report gives each filter's rejection rate.

    Called once when plugins load. ``synth.filter`` selects one by name.

    :param register: ``register(cls: type[PairFilter], name: str | None = None)``

    Example::

        @hookimpl
        def register_pair_filters(register):
            register(MinLengthFilter)  # name = "min-length"
    """


@hookspec
def register_model_aliases(register: Register) -> None:
    """Register model aliases: subclasses of :class:`music_core.contracts.ModelAlias` that turn
    a short name (or a glob such as ``*.gguf``) into a local folder or file to load.

    Called once when plugins load. ``music_core.models.resolve_model`` consults them wherever a
    model is named (``train.backbone``, the local provider's ``model``, ``--rm``).

    :param register: ``register(cls: type[ModelAlias], name: str | None = None)``

    Example::

        @hookimpl
        def register_model_aliases(register):
            register(TeamBackbone)  # name = "team-backbone"
    """


@hookspec
def register_reward_heads(register: Register) -> None:
    """Register reward heads: subclasses of :class:`music_core.contracts.RewardHead` that turn
    hidden states into one reward per conversation.

    Called once when plugins load. ``train.head`` selects one by name.

    :param register: ``register(cls: type[RewardHead], name: str | None = None)``

    Example::

        @hookimpl
        def register_reward_heads(register):
            register(MaxPoolHead)  # name = "max-pool"
    """


@hookspec
def register_trainers(register: Register) -> None:
    """Register reward-model trainers: subclasses of :class:`music_core.contracts.Trainer`.

    Called once when plugins load. ``train.trainer`` selects one by name.

    :param register: ``register(cls: type[Trainer], name: str | None = None)``

    Example::

        @hookimpl
        def register_trainers(register):
            register(HingeTrainer)  # name = "hinge"
    """


@hookspec
def register_judges(register: Register) -> None:
    """Register judges: subclasses of :class:`music_core.contracts.Judge` that compare two
    conversations; the core runs every judge in both orders.

    Called once when plugins load. ``eval.bon.judge`` selects one by name.

    :param register: ``register(cls: type[Judge], name: str | None = None)``

    Example::

        @hookimpl
        def register_judges(register):
            register(LengthJudge)  # name = "longer-wins"
    """


@hookspec
def register_evaluators(register: Register) -> None:
    """Register evaluators: subclasses of :class:`music_core.contracts.Evaluator`. Each becomes
    ``music eval <command>`` and can be listed in ``eval.evaluators`` for ``music run``.

    Called once when plugins load.

    :param register: ``register(cls: type[Evaluator], name: str | None = None)``

    Example::

        @hookimpl
        def register_evaluators(register):
            register(CalibrationEval)  # name = "calibration", command = "calibration"
    """


@hookspec
def register_launchers(register: Register) -> None:
    """Register sweep launchers: subclasses of :class:`music_core.contracts.Launcher` that start
    each variant of ``music sweep`` as its own process (locally, on SLURM, ...).

    Called once when plugins load. ``sweep.launcher`` (or ``music sweep --launcher``) selects one.

    :param register: ``register(cls: type[Launcher], name: str | None = None)``

    Example::

        @hookimpl
        def register_launchers(register):
            register(MyClusterLauncher)  # name = "my-cluster"
    """


@hookspec
def register_commands(register: Register) -> None:
    """Register top-level CLI commands: ``click.Command`` (or group) objects.

    Called once when the CLI starts. Keep the module light: import heavy code inside the
    command function.

    :param register: ``register(command: click.Command, name: str | None = None)``

    Example::

        @hookimpl
        def register_commands(register):
            @click.command()
            def hello():
                click.echo("hello")
            register(hello)
    """


def registry_hooks() -> list[str]:
    """Names of every hook above, in order."""
    return [name for name, obj in globals().items()
            if name.startswith("register_") and callable(obj) and hasattr(obj, "music_spec")]

