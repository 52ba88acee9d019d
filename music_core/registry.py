"""The registry of components that plugins registered, with their provenance."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import contracts as c
from .errors import PluginError, UnknownComponentError

if TYPE_CHECKING:
    from .context import RunContext


@dataclass(frozen=True)
class Kind:
    key: str
    hook: str
    label: str
    check: Callable[[Any], bool]
    expected: str


def _subclass_of(*bases: type) -> Callable[[Any], bool]:
    return lambda obj: isinstance(obj, type) and issubclass(obj, bases) and obj not in bases


def _is_click_command(obj: Any) -> bool:
    import click

    return isinstance(obj, click.Command)


def _provider_check(obj: Any) -> bool:
    from .llm.provider import ChatProvider

    return _subclass_of(ChatProvider)(obj)


KINDS: dict[str, Kind] = {k.key: k for k in (
    Kind("chat_provider", "register_chat_providers", "chat provider", _provider_check, "a ChatProvider subclass"),
    Kind("simulator", "register_simulators", "simulator",
         _subclass_of(c.UserSimulator, c.AssistantSimulator), "a UserSimulator or AssistantSimulator subclass"),
    Kind("contrast_strategy", "register_contrast_strategies", "contrast strategy",
         _subclass_of(c.ContrastStrategy), "a ContrastStrategy subclass"),
    Kind("seed_source", "register_seed_sources", "seed source", _subclass_of(c.SeedSource), "a SeedSource subclass"),
    Kind("pair_filter", "register_pair_filters", "pair filter", _subclass_of(c.PairFilter), "a PairFilter subclass"),
    Kind("reward_head", "register_reward_heads", "reward head", _subclass_of(c.RewardHead), "a RewardHead subclass"),
    Kind("trainer", "register_trainers", "trainer", _subclass_of(c.Trainer), "a Trainer subclass"),
    Kind("judge", "register_judges", "judge", _subclass_of(c.Judge), "a Judge subclass"),
    Kind("evaluator", "register_evaluators", "evaluator", _subclass_of(c.Evaluator), "an Evaluator subclass"),
    Kind("model_alias", "register_model_aliases", "model alias", _subclass_of(c.ModelAlias), "a ModelAlias subclass"),
    Kind("launcher", "register_launchers", "launcher", _subclass_of(c.Launcher), "a Launcher subclass"),
    Kind("command", "register_commands", "command", _is_click_command, "a click.Command"),
)}


@dataclass(frozen=True)
class Registered:
    kind: str
    name: str
    obj: Any
    plugin: str
    module: str
    distribution: str | None
    version: str | None


class Registry:
    def __init__(self) -> None:
        self._items: dict[str, dict[str, Registered]] = {k: {} for k in KINDS}
        self.broken: dict[str, str] = {}  # plugin -> why (filled by the plugin manager)

    def make_register(self, kind: str, plugin: str, distribution: str | None, version: str | None):
        """The ``register`` callback handed to one plugin's implementation of one hook."""
        spec = KINDS[kind]

        def register(component: Any, name: str | None = None) -> None:
            if not spec.check(component):
                raise PluginError(f"plugin {plugin!r} registered {component!r} as a {spec.label}, "
                                  f"but a {spec.label} must be {spec.expected}")
            cname = name or getattr(component, "name", None)
            if not isinstance(cname, str) or not cname:
                raise PluginError(f"plugin {plugin!r} registered a {spec.label} without a name "
                                  f"(set the class attribute `name` or pass name=...)")
            existing = self._items[kind].get(cname)
            if existing is not None:
                raise PluginError(f"{spec.label} {cname!r} is registered twice: by plugin "
                                  f"{existing.plugin!r} and by plugin {plugin!r}; rename one or block a plugin "
                                  f"with MUSIC_BLOCK_PLUGINS")
            # a click command's own module is click's; where it was written is its callback's
            owner = getattr(component, "callback", None) if spec.key == "command" else component
            module = getattr(owner, "__module__", None) or type(component).__module__
            self._items[kind][cname] = Registered(kind, cname, component, plugin, module, distribution, version)

        return register

    def drop_plugin(self, plugin: str) -> None:
        for items in self._items.values():
            for name in [n for n, r in items.items() if r.plugin == plugin]:
                del items[name]

    def names(self, kind: str) -> list[str]:
        return sorted(self._items[kind])

    def all(self) -> list[Registered]:
        return [r for kind in KINDS for r in sorted(self._items[kind].values(), key=lambda r: r.name)]

    def entry(self, kind: str, name: str) -> Registered:
        try:
            return self._items[kind][name]
        except KeyError:
            label = KINDS[kind].label
            known = ", ".join(self.names(kind)) or "none"
            broken = "".join(f"\n  note: plugin {p!r} failed to load: {why.splitlines()[0]}" for p, why in self.broken.items())
            raise UnknownComponentError(f"no {label} named {name!r}; registered: {known}{broken}") from None

    def get(self, kind: str, name: str) -> Any:
        return self.entry(kind, name).obj

    def find(self, kind: str, name: str | None) -> Any | None:
        """The component ``name`` of ``kind``, or None when no plugin registered that name (a typo,
        a blocked plugin): for callers that leave naming the problem to the stage that builds it."""
        entry = self._items[kind].get(name) if name else None
        return entry.obj if entry is not None else None

    def create(self, kind: str, name: str, options: dict[str, Any] | None = None, ctx: RunContext | None = None) -> Any:
        """Instantiate a registered component with the uniform ``(options, ctx)`` constructor."""
        return self.get(kind, name)(options, ctx)
