"""Check before spending: before ``music run`` makes its first call, everything its later stages
need that can be known up front. The trainer's memory plan fits the GPUs; every dataset a stage
reads resolves (a local path exists with the columns its reader needs in its first rows, a hub id
is cached, or reachable when online); every endpoint a pending stage calls has its key variable
set; every component the config names is registered. The run then refuses with one list of every
problem, each naming its config key (:class:`~music_core.errors.PreflightError`, exit 7);
``run.preflight=false`` skips the check. The components take part through their contracts'
``preflight`` hooks (trainer, evaluators, seed sources); the core imports no plugin."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from .datacheck import _ASK_HUB, ROWS, check_data, hub_offline, in_hub_cache, looks_local
from .errors import MusicError, PreflightError, Problem

if TYPE_CHECKING:
    from .config.schema import DataSourceConfig
    from .context import RunContext
    from .stages import Stage

__all__ = ["ROWS", "check", "check_data", "check_source", "find_problems", "hub_offline", "in_hub_cache",
           "looks_local", "planned_steps", "print_findings"]  # the data checks live in music_core.datacheck
STAGE_SECTIONS = {"synth": ("seeds", "synth"), "audit": ("audit",), "mix": ("mix",), "train": ("train",)}


def check_source(ctx: RunContext, cfg: DataSourceConfig, key: str, what: str) -> list[Problem]:
    """The seed source ``cfg.source`` (a :class:`DataSourceConfig` at config ``key``) exists,
    provides ``what`` (``conversations`` or ``pairs``), and its own preflight passes."""
    try:
        source = ctx.registry.get("seed_source", cfg.source)
    except MusicError as exc:
        return [Problem(f"{key}.source", str(exc))]
    if what not in source.provides:
        return [Problem(f"{key}.source", f"seed source {cfg.source!r} provides {list(source.provides)}, not {what}")]
    return _ask(key, source.preflight, cfg, key, what)


def _ask(key: str, hook: Any, *args: Any) -> list[Problem]:
    """A component's preflight hook; an error it raises (naming the key) is one more problem."""
    try:
        return list(hook(*args))
    except MusicError as exc:
        return [Problem(key, str(exc))]


def find_problems(ctx: RunContext, steps: list[str], *, ask_hub: bool = True) -> list[Problem]:
    """Every problem the pending ``steps`` (``synth``, ``train-music``, ``eval-rewardbench``, ...)
    would meet; ``ask_hub=False`` checks hub ids against the cache only (no request)."""
    token = _ASK_HUB.set(ask_hub)
    try:
        return list(dict.fromkeys(_find(ctx, steps)))  # in order, each once
    finally:
        _ASK_HUB.reset(token)


def _find(ctx: RunContext, steps: list[str]) -> list[Problem]:
    c = ctx.config
    stages = {s.split("-", 1)[0] for s in steps}
    evaluators = [s.removeprefix("eval-") for s in steps if s.startswith("eval-")]
    problems = _components(ctx, stages, evaluators)
    roles: list[str] = []
    if "synth" in stages:
        from .config.load import SYNTH_ROLES

        roles += SYNTH_ROLES
        problems += check_source(ctx, c.seeds, "seeds", "conversations")
    if "audit" in stages:
        roles.append("auditor")
        a = c.audit
        for attr in ("pairs", "known_pairs"):
            if getattr(a, attr):
                problems += check_data(getattr(a, attr), f"audit.{attr}", columns=("chosen", "rejected"))
    if "mix" in stages or ("audit" in stages and not c.audit.pairs and not c.audit.known_pairs and c.audit.calibration_pairs):
        problems += check_source(ctx, c.mix.original, "mix.original", "pairs")
    if "train" in stages:
        trainer = _registered(ctx, "trainer", c.train.trainer, "train.trainer", problems)
        if trainer is not None:
            problems += _ask("train", trainer.preflight, c.train)
    for name in evaluators:
        cls = _registered(ctx, "evaluator", name, "eval.evaluators", problems)
        if cls is None:
            continue
        section = getattr(c.eval, cls.section_name(), None)
        problems += _ask(f"eval.{cls.section_name()}", cls.preflight, section, ctx)
        cls.estimate(section, c, lambda role, *_: roles.append(role))  # the roles it will call
    return problems + _keys(ctx, roles)


def _registered(ctx: RunContext, kind: str, name: str, key: str, problems: list[Problem]) -> Any:
    try:
        return ctx.registry.get(kind, name)
    except MusicError as exc:
        problems.append(Problem(key, str(exc)))
        return None


def _components(ctx: RunContext, stages: set[str], evaluators: list[str]) -> list[Problem]:
    """Every component a pending stage's section names (each ``*_options`` field says which
    key selects it); ``auto`` is resolved later by the stage itself."""
    c, problems = ctx.config, list[Problem]()
    sections = [(f"{s}.", getattr(c, s)) for stage in stages for s in STAGE_SECTIONS.get(stage, ())]
    for name in evaluators:
        if name in ctx.registry.names("evaluator"):  # an unknown one is named by _find
            key = ctx.registry.get("evaluator", name).section_name()
            if dataclasses.is_dataclass(getattr(c.eval, key, None)):
                sections.append((f"eval.{key}.", getattr(c.eval, key)))
    if "synth" in stages and c.synth.fallback_strategy:
        _registered(ctx, "contrast_strategy", c.synth.fallback_strategy, "synth.fallback_strategy", problems)
    for prefix, section in sections:
        for f in dataclasses.fields(section):
            kind, value = f.metadata.get("component_kind"), getattr(section, f.name)
            if kind:
                chosen = getattr(section, f.metadata["selected_by"], None)
                if chosen and chosen != "auto":
                    _registered(ctx, kind, chosen, f"{prefix}{f.metadata['selected_by']}", problems)
            elif dataclasses.is_dataclass(value) and not isinstance(value, type):  # mix.original, train.lora
                sections.append((f"{prefix}{f.name}.", value))
    return problems


def _keys(ctx: RunContext, roles: list[str]) -> list[Problem]:
    """Each endpoint the roles use, once: its provider exists and has what it needs to call (a
    key variable that is set), asked through the provider's own ``check_credentials``."""
    from .config.load import role_endpoint
    from .llm.errors import AuthError

    c, problems = ctx.config, list[Problem]()
    by_endpoint: dict[str, list[str]] = {}
    for role in dict.fromkeys(roles):
        by_endpoint.setdefault(role_endpoint(c, role), []).append(role)
    for name, used_by in by_endpoint.items():
        ep, who = c.models[name], f" (used by {', '.join(used_by)})"
        provider = _registered(ctx, "chat_provider", ep.provider, f"models.{name}.provider", problems)
        if provider is None:
            continue
        try:
            provider(ep).check_credentials()
        except MusicError as exc:
            key = f"models.{name}.api_key_env" if isinstance(exc, AuthError) else f"models.{name}"
            problems.append(Problem(key, f"{exc}{who}"))
    return problems


def planned_steps(ctx: RunContext) -> list[tuple[Stage, str]]:
    """(stage, step) of every step ``music run`` would make, in order, less those with nothing to
    do (an evaluator without data)."""
    from .stages import STAGES

    return [(STAGES[name], step) for name in ctx.config.run.stages for step in STAGES[name].steps(ctx)
            if not STAGES[name].skip_reason(ctx, step)]


def print_findings(ctx: RunContext) -> None:
    """The dry run's view: what the preflight of ``music run`` would refuse, asking no server."""
    import click

    problems = find_problems(ctx, [step for _, step in planned_steps(ctx)], ask_hub=False)
    click.echo("\n  preflight (before its first call; run.preflight=false skips): "
               + (f"music run would refuse, {len(problems)} problem(s):" if problems else "nothing found"))
    for p in problems:
        click.echo(f"    - {p}")


def check(ctx: RunContext, steps: list[str]) -> None:
    """Raise :class:`PreflightError` listing every problem the pending ``steps`` would meet."""
    problems = find_problems(ctx, steps)
    if problems:
        raise PreflightError(problems)
