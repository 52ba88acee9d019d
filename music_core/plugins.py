"""The plugin manager: bundled plugins and third-party entry points (group ``music``) load
through one code path, once, on first use; a plugin that fails is recorded, not fatal.

Environment:
- ``MUSIC_LOAD_PLUGINS=a,b``: allow-list; only these plugins load (the core's own always do).
- ``MUSIC_BLOCK_PLUGINS=a,b``: block-list; these never load.
"""

from __future__ import annotations

import functools
import importlib
import os
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .registry import KINDS, Registry

CORE_PLUGINS = ("music_core.commands",)
DEFAULT_PLUGINS = CORE_PLUGINS + (
    "music_assets",
    "music_data",
    "music_simulators",
    "music_contrast",
    "music_local",
    "music_openai",
    "music_anthropic",
    "music_gemini",
    "music_bt",
    "music_bon",
    "music_rewardbench",
    "music_human",
    "music_rmb",
    "music_depth",
    "music_inspect",
    "music_launchers",
    "music_serve",
)
ENTRY_POINT_GROUP = "music"
SELF_DISTRIBUTION = "music-rm"


@dataclass
class PluginRecord:
    name: str
    module: str
    source: str  # bundled | entry-point | registered
    distribution: str | None = None
    version: str | None = None
    status: str = "ok"  # ok | broken | skipped
    error: str = ""


def _env_list(var: str) -> set[str] | None:
    raw = os.environ.get(var)
    if raw is None:
        return None
    return {x.strip() for x in raw.replace(" ", ",").split(",") if x.strip()}


def _self_version() -> str | None:
    try:
        return metadata.version(SELF_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None


def _sources() -> Iterator[tuple[str, str, str, str | None, str | None, Callable[[], Any]]]:
    """(name, module, source, distribution, version, loader) for every plugin to consider."""
    version = _self_version()
    for dotted in DEFAULT_PLUGINS:
        yield dotted, dotted, "bundled", SELF_DISTRIBUTION, version, functools.partial(importlib.import_module, dotted)
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.value.split(":")[0] in DEFAULT_PLUGINS:
            continue  # a bundled plugin also declared as an entry point
        dist = getattr(ep, "dist", None)
        yield (ep.name, ep.value, "entry-point", dist.metadata["Name"] if dist else None,
               dist.version if dist else None, ep.load)


class PluginSet:
    """One loaded set of plugins and the registry built from them."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("music")
        self.pm.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        self._registry: Registry | None = None

    def load(self) -> PluginSet:
        allow, block = _env_list("MUSIC_LOAD_PLUGINS"), _env_list("MUSIC_BLOCK_PLUGINS")
        for name, module, source, dist, version, loader in _sources():
            rec = PluginRecord(name, module, source, dist, version)
            self.records[name] = rec
            core = name in CORE_PLUGINS
            if not core and block and (name in block or module in block or (dist or "") in block):
                rec.status, rec.error = "skipped", "blocked by MUSIC_BLOCK_PLUGINS"
                continue
            if not core and allow is not None and not ({name, module, dist or ""} & allow):
                rec.status, rec.error = "skipped", "not in MUSIC_LOAD_PLUGINS"
                continue
            try:
                obj = loader()
            except Exception:
                rec.status = "broken"
                rec.error = f'Error importing plugin "{name}":\n{traceback.format_exc()}'
                continue
            self.add(obj, name, rec)
        return self

    def add(self, obj: Any, name: str, rec: PluginRecord | None = None) -> PluginRecord:
        """Register a plugin object (module or instance); used by ``load`` and by tests."""
        rec = rec or PluginRecord(name, getattr(obj, "__name__", type(obj).__name__), "registered")
        self.records[name] = rec
        try:
            self.pm.register(obj, name=name)
            unknown = self._unknown_hooks(name)
            if unknown:
                self.pm.unregister(name=name)
                raise ValueError(f"implements unknown hooks {unknown} (known: {hookspecs.registry_hooks()})")
        except Exception as exc:
            rec.status, rec.error = "broken", f'Error registering plugin "{name}": {exc}'
        self._registry = None
        return rec

    def _unknown_hooks(self, name: str) -> list[str]:
        """Hook names the plugin implements that no spec declares (typos, other projects)."""
        plugin = self.pm.get_plugin(name)
        return [caller.name for caller in self.pm.get_hookcallers(plugin) or [] if caller.spec is None]

    def remove(self, name: str) -> None:
        if self.pm.has_plugin(name):
            self.pm.unregister(name=name)
        self.records.pop(name, None)
        self._registry = None

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = self._build_registry()
        return self._registry

    def _build_registry(self) -> Registry:
        reg = Registry()
        order = {n: i for i, n in enumerate(self.records)}
        for kind in KINDS.values():
            impls = getattr(self.pm.hook, kind.hook).get_hookimpls()
            for impl in sorted(impls, key=lambda i: order.get(i.plugin_name, len(order))):
                rec = self.records.get(impl.plugin_name)
                if rec is None or rec.status != "ok":
                    continue
                register = reg.make_register(kind.key, impl.plugin_name, rec.distribution, rec.version)
                try:
                    impl.function(**{a: register for a in impl.argnames})
                except Exception as exc:
                    rec.status = "broken"
                    rec.error = f'Plugin "{impl.plugin_name}" failed in {kind.hook}: {exc}\n{traceback.format_exc()}'
                    reg.drop_plugin(impl.plugin_name)
        reg.broken = {n: r.error for n, r in self.records.items() if r.status == "broken"}
        return reg

    def broken(self) -> list[PluginRecord]:
        _ = self.registry  # building it runs the register hooks, which can break plugins too
        return [r for r in self.records.values() if r.status == "broken"]


_current: PluginSet | None = None


def get_plugins() -> PluginSet:
    """The process's plugin set, loaded on first use."""
    global _current
    if _current is None:
        _current = PluginSet().load()
    return _current


def get_registry() -> Registry:
    return get_plugins().registry


def reset() -> None:
    """Forget loaded plugins (tests; after installing a plugin at run time)."""
    global _current
    _current = None


@contextmanager
def temporary_plugin(obj: Any, name: str) -> Iterator[PluginRecord]:
    """Register a plugin for the duration of a ``with`` block (tests, notebooks)."""
    plugins = get_plugins()
    rec = plugins.add(obj, name)
    try:
        yield rec
    finally:
        plugins.remove(name)
