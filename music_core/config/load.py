"""Load, merge and validate configs: schema defaults <- YAML file <- dot-list overrides."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..errors import ConfigError
from ..options import options as options  # re-exported: plugins and docs import it from here
from .schema import ROLE_DEFAULTS as ROLE_DEFAULTS  # re-exported: role lookup lives with the schema
from .schema import EvalConfig, MusicConfig, TrainConfig
from .schema import role_endpoint as role_endpoint

PROMPT_PROFILES = ("paper", "small-model")
SYNTH_ROLES = ("user_simulator", "assistant_simulator", "contrast")


def resolve_prompt_profile(cfg: MusicConfig) -> tuple[str, str]:
    """The prompt profile a synthesis run uses, and why. ``auto`` picks ``small-model`` only
    when every synthesis role runs in-process on the ``local`` provider (the offline default's
    135M model); any hosted or served model gets the paper's prompts."""
    if cfg.synth.prompt_profile != "auto":
        return cfg.synth.prompt_profile, "set by synth.prompt_profile"
    providers = set()
    for role in SYNTH_ROLES:
        name = getattr(cfg.roles, role, None) or cfg.roles.assistant_simulator
        providers.add(cfg.models[name].provider if name in cfg.models else "?")
    if providers == {"local"}:
        return "small-model", "auto: every synthesis role runs on the local provider"
    return "paper", f"auto: synthesis roles run on {', '.join(sorted(providers))}"


def resolve_user_simulator(cfg: MusicConfig) -> str:
    if cfg.synth.user_simulator != "auto":
        return cfg.synth.user_simulator
    return "role-flip" if resolve_prompt_profile(cfg)[0] == "small-model" else "transcript"



def _explain(exc: OmegaConfBaseException, origin: str) -> ConfigError:
    key = getattr(exc, "full_key", None) or "?"
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    # OmegaConf words unknown keys as "Key 'x' not in 'SynthConfig'"; say it the user's way.
    if type(exc).__name__ == "ConfigKeyError" and "not in" in first:
        hint = re.search(r"Did you mean: '([^']+)'", first)
        parent = key.rsplit(".", 1)[0] + "." if "." in key else ""
        msg = f"unknown config key '{key}'" + (f" (did you mean '{parent}{hint.group(1)}'?)" if hint else "")
    elif type(exc).__name__ == "MissingMandatoryValue":
        msg = f"config key '{key}' is required but has no value"
    else:
        msg = f"bad value for config key '{key}': {first}"
    return ConfigError(f"{origin}: {msg}")


def load_yaml(path: str | os.PathLike) -> DictConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        cfg = OmegaConf.load(path)
    except Exception as exc:  # yaml.YAMLError carries the line in its message
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return cfg


def _selection(file_cfg: DictConfig | None, overrides: list[str] | tuple[str, ...]) -> DictConfig:
    """``train.trainer`` and ``eval.evaluators`` as the file and the overrides set them, read
    before any schema applies (they decide the schema)."""
    raw = OmegaConf.create({})
    sources = [file_cfg] if file_cfg is not None else []
    sources += [OmegaConf.from_dotlist([o]) for o in overrides
                if o.split("=", 1)[0].strip() in ("train.trainer", "eval.evaluators")]
    for src in sources:
        for key in ("train.trainer", "eval.evaluators"):
            value = OmegaConf.select(src, key, default=None)
            if value is not None:
                OmegaConf.update(raw, key, value, force_add=True)
    return raw


def schema_for(trainer: str, evaluators: list[str]) -> tuple[type, Any, dict[str, Any]]:
    """The config schema for the selected components: the stages' own keys plus the options the
    trainer (``train.*``) and each selected evaluator (``eval.<key>``) declare. A name that is
    not registered (a typo, a blocked plugin) brings no options; its stage names the problem."""
    from ..plugins import get_registry

    reg = get_registry()
    trainer_cls = reg.find("trainer", trainer)
    section = getattr(trainer_cls, "config_class", None) or TrainConfig  # None: the trainer adds no keys
    if not (isinstance(section, type) and issubclass(section, TrainConfig)):
        raise ConfigError(f"trainer {trainer!r}: config_class must be a dataclass that extends TrainConfig")
    chosen: dict[str, Any] = {}
    for name in evaluators:
        cls = reg.find("evaluator", name)
        if cls is not None and getattr(cls, "config_class", None) is not None:
            chosen[cls.section_name()] = cls
    key = (section, tuple((k, c.config_class) for k, c in sorted(chosen.items())))
    if key not in _SCHEMAS:
        _SCHEMAS[key] = _assemble(section, key[1])
    return _SCHEMAS[key], trainer_cls, chosen


_SCHEMAS: dict[tuple[Any, ...], type] = {}  # one class per selection: configs loaded twice compare equal


def _assemble(train_section: type, eval_sections: tuple[tuple[str, type], ...]) -> type:
    if train_section is TrainConfig and not eval_sections:
        return MusicConfig
    evals: type = EvalConfig
    if eval_sections:
        evals = dataclasses.make_dataclass(
            "EvalConfig", [(k, c, dataclasses.field(default_factory=c, metadata={"help": f"options of {k}"}))
                           for k, c in eval_sections], bases=(EvalConfig,))
    return dataclasses.make_dataclass(
        "MusicConfig", [("train", train_section, dataclasses.field(default_factory=train_section,
                                                                    metadata={"help": "reward-model training"})),
                        ("eval", evals, dataclasses.field(default_factory=evals, metadata={"help": "evaluation"}))],
        bases=(MusicConfig,))


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = (),
                evaluators: tuple[str, ...] = ()) -> MusicConfig:
    """The resolved, validated config. Unknown keys and wrong types raise ConfigError naming the
    key and where it came from (the file, or the command-line override). The ``train`` section
    holds the selected trainer's own options (and no other trainer's); ``eval`` holds a section
    for each evaluator in ``eval.evaluators`` and in ``evaluators`` (``music eval <command>``)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. synth.turns=3)")
    file_cfg = load_yaml(path) if path is not None else None  # read once: it selects the schema, then fills it
    picked = _selection(file_cfg, overrides)
    listed = OmegaConf.select(picked, "eval.evaluators", default=None)
    names = list(listed) if listed is not None else list(EvalConfig().evaluators)
    schema, trainer_cls, evaluator_classes = schema_for(
        str(OmegaConf.select(picked, "train.trainer", default=None) or TrainConfig.trainer),
        names + [e for e in evaluators if e not in names])
    merged = OmegaConf.structured(schema)
    if path is not None:
        try:
            merged = OmegaConf.merge(merged, file_cfg)
        except OmegaConfBaseException as exc:
            raise _explain(exc, str(path)) from None
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. synth.turns=3)")
        try:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as exc:
            raise _explain(exc, f"override {item!r}") from None
    try:
        cfg: MusicConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as exc:
        raise _explain(exc, str(path) if path else "config") from None
    check_semantics(cfg)
    check_component_options(cfg)
    if trainer_cls is not None:
        trainer_cls.check_config(cfg.train)
    for key, cls in evaluator_classes.items():
        cls.check_config(getattr(cfg.eval, key), cfg)
    return cfg


def declared_options(cfg: MusicConfig, kind: str, name: str | None) -> type | None:
    """The ``options_class`` of the component ``name`` of ``kind`` (the user simulator's ``auto``
    resolved as synthesis resolves it); None when none is selected, registered or declared."""
    from ..plugins import get_registry

    if name == "auto" and kind == "simulator":
        name = resolve_user_simulator(cfg)
    cls = get_registry().find(kind, name)  # None when not registered: the stage that builds it names the problem
    return getattr(cls, "options_class", None)


def check_component_options(cfg: MusicConfig) -> None:
    """Every ``*_options`` dict against the options the component it belongs to declares
    (``options_class``), wherever in the config it sits: core stages and plugin sections alike.
    A component that is not registered, or declares nothing, is left to its stage."""
    def walk(section: Any, prefix: str) -> None:
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            kind = f.metadata.get("component_kind")
            if kind:
                options_class = declared_options(cfg, kind, getattr(section, f.metadata["selected_by"], None))
                if options_class is not None:
                    options(options_class, value, f"{prefix}{f.name}")
            elif dataclasses.is_dataclass(value) and not isinstance(value, type):
                walk(value, f"{prefix}{f.name}.")
            elif isinstance(value, dict):  # named sections (models.<name>)
                for name, item in value.items():
                    if dataclasses.is_dataclass(item) and not isinstance(item, type):
                        walk(item, f"{prefix}{f.name}.{name}.")

    walk(cfg, "")


def check_semantics(cfg: MusicConfig) -> None:
    """Cross-field rules that types alone cannot express."""
    def need(ok: bool, key: str, msg: str) -> None:
        if not ok:
            raise ConfigError(f"config key '{key}': {msg}")

    for role in ("user_simulator", "assistant_simulator", "contrast", "policy", "judge", "auditor"):
        name = getattr(cfg.roles, role)
        if name is not None:
            need(name in cfg.models, f"roles.{role}",
                 f"endpoint {name!r} is not defined under models (defined: {sorted(cfg.models)})")
    for name, ep in cfg.models.items():
        need(ep.concurrency >= 1, f"models.{name}.concurrency", "must be at least 1")
        need(ep.max_retries >= 0, f"models.{name}.max_retries", "must be >= 0")
        need(ep.timeout_s > 0, f"models.{name}.timeout_s", "must be > 0")
        need(ep.max_tokens >= 1, f"models.{name}.max_tokens", "must be at least 1")
        for k in ("rpm", "tpm"):
            v = getattr(ep, k)
            need(v is None or v > 0, f"models.{name}.{k}", "must be > 0 when set")
        need(ep.mode in ("online", "batch"), f"models.{name}.mode", f"is {ep.mode!r}; use online or batch")
        need(not (ep.base_url and ep.base_urls), f"models.{name}.base_urls",
             "set base_url (one server) or base_urls (replicas), not both")
        need(len(set(ep.base_urls)) == len(ep.base_urls), f"models.{name}.base_urls", "lists a replica twice")
        need(ep.replica_cooldown_s >= 0, f"models.{name}.replica_cooldown_s", "must be >= 0")
        for k in ("batch_linger_s", "batch_poll_s", "batch_poll_max_s"):
            need(getattr(ep, k) > 0, f"models.{name}.{k}", "must be > 0")
        need(ep.batch_max_requests is None or ep.batch_max_requests >= 1, f"models.{name}.batch_max_requests",
             "must be at least 1 when set")
        need(0 < ep.batch_price_factor <= 1, f"models.{name}.batch_price_factor", "must be in (0, 1]")
    need(cfg.synth.turns >= 1, "synth.turns", "must be at least 1")
    need(0.0 <= cfg.synth.max_error_rate <= 1.0, "synth.max_error_rate", "must be in [0, 1]")
    need(cfg.synth.prompt_profile in PROMPT_PROFILES + ("auto",), "synth.prompt_profile",
         f"must be auto, {' or '.join(PROMPT_PROFILES)}")
    need(cfg.synth.contrast_from_turn >= 1, "synth.contrast_from_turn", "must be at least 1")
    need(cfg.seeds.min_context_turns <= cfg.seeds.max_context_turns, "seeds.min_context_turns",
         "must not exceed seeds.max_context_turns")
    if cfg.synth.shard is not None:
        parse_shard(cfg.synth.shard)
    need(0.0 <= cfg.mix.eval_fraction < 1.0, "mix.eval_fraction", "must be in [0, 1)")
    r = cfg.mix.synthetic_ratio
    need(r is None or 0.0 <= r <= 1.0, "mix.synthetic_ratio", "must be in [0, 1]")
    unknown_stages = set(cfg.run.stages) - {"synth", "audit", "mix", "train", "eval"}
    need(not unknown_stages, "run.stages", f"unknown stages {sorted(unknown_stages)} (known: synth, audit, mix, train, eval)")
    a = cfg.audit
    need(a.limit is None or a.limit >= 1, "audit.limit", "must be at least 1 when set")
    need(a.calibration_pairs >= 0, "audit.calibration_pairs", "must be >= 0")
    need(a.unreadable_stop >= 1, "audit.unreadable_stop", "must be at least 1")
    need(a.concurrency >= 1, "audit.concurrency", "must be at least 1")
    for name, endpoint in (cfg.eval.judges or {}).items():
        need(bool(re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", str(name))), f"eval.judges.{name}",
             "a judge's name is letters, digits, '_', '.' or '-' (it names its verdict file)")
        need(endpoint in cfg.models, f"eval.judges.{name}",
             f"endpoint {endpoint!r} is not defined under models (defined: {sorted(cfg.models)})")
    need(cfg.eval.contamination.ngram >= 4, "eval.contamination.ngram", "must be at least 4 (shorter n-grams match by chance)")
    need(cfg.sweep.jobs >= 1, "sweep.jobs", "must be at least 1")
    p = cfg.mix.audit.min_p
    need(p is None or 0.0 <= p <= 1.0, "mix.audit.min_p", "must be in [0, 1]")


def parse_shard(spec: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise ConfigError(f"config key 'synth.shard': {spec!r} is not of the form i/n (e.g. 0/4)") from None
    if not (n >= 1 and 0 <= i < n):
        raise ConfigError(f"config key 'synth.shard': {spec!r} needs 0 <= i < n")
    return i, n


def to_yaml(cfg: MusicConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))

