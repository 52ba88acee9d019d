"""The typed config schema. Defaults are the offline embedded default (``configs/default.yaml``
spells the same values out; a test keeps the two equal). ``configs/paper.yaml`` overrides them
with the paper's setup.

Every field carries ``metadata={"help": ...}``; ``music config show --help-keys`` prints them.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from ..errors import (
    OptionError as OptionError,  # re-exported: options dataclasses raise it from here
)


def option(default: Any, help: str) -> Any:
    """A config field with its help text (``music config show --help-keys`` prints it); plugins
    declare their options with it too."""
    if isinstance(default, (dict, list)):
        return field(default_factory=functools.partial(copy.copy, default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


def component_options(kind: str, selected_by: str, help: str) -> Any:
    """The options dict of the component that the sibling key ``selected_by`` names (a ``kind``
    from the registry). The config loader checks it against that component's ``options_class``,
    so a wrong key or value fails at load, naming the key, not when the component is built."""
    return field(default_factory=dict, metadata={"help": help, "component_kind": kind, "selected_by": selected_by})


_f = option


@dataclass
class EndpointConfig:
    """One named LLM endpoint; roles refer to it by name."""

    provider: str = _f(MISSING, "registered chat provider: gemini, openai, anthropic, local, ...")
    model: str = _f(MISSING, "model id at the provider, or for `local` a GGUF file, HF folder or alias")
    base_url: str | None = _f(None, "API base URL (an OpenAI-compatible server, a proxy, a test server)")
    base_urls: list[str] = _f([], "several replicas of one server (vLLM, SGLang, llama.cpp): each request goes to the "
                                  "least-loaded healthy one; instead of base_url")
    replica_cooldown_s: float = _f(30.0, "how long a replica that failed gets no requests before it is tried again")
    mode: str = _f("online", "online: one request per call; batch: the vendor's batch API (about half the price), "
                             "each round of calls one job (openai, anthropic, gemini)")
    batch_linger_s: float = _f(2.0, "batch mode: a round is submitted once no new call has come for this long")
    batch_poll_s: float = _f(15.0, "batch mode: first wait between polls of a job; grows 1.5x a poll")
    batch_poll_max_s: float = _f(300.0, "batch mode: longest wait between polls")
    batch_max_requests: int | None = _f(None, "batch mode: most requests in one job (default: the vendor's limit)")
    batch_price_factor: float = _f(0.5, "batch mode: the batch price as a fraction of the online price, for costs")
    api_key_env: str | None = _f(None, "environment variable that holds the key (default: the provider's usual one)")
    concurrency: int = _f(8, "requests in flight at once")
    rpm: float | None = _f(None, "requests per minute cap (sliding 60 s window)")
    tpm: float | None = _f(None, "tokens per minute cap (prompt + completion, sliding 60 s window)")
    max_retries: int = _f(5, "retries on 429, 5xx, timeouts and dropped connections")
    timeout_s: float = _f(120.0, "per-request timeout in seconds")
    retry_backoff_s: float = _f(1.0, "first retry delay; doubles each retry, with jitter, capped at 60 s")
    max_retry_after_s: float = _f(60.0, "longest server Retry-After honoured (longer ones wait this long)")
    rate_window_s: float = _f(60.0, "rpm/tpm always hold over every 60 s window; a shorter window here also "
                                     "spreads them evenly (1: per second)")
    temperature: float = _f(1.0, "sampling temperature")
    top_p: float | None = _f(None, "nucleus sampling mass")
    max_tokens: int = _f(1024, "completion token cap")
    seed: int | None = _f(None, "base sampling seed where the provider takes one (default: run.seed); "
                                "sample i is sent with seed + i")
    price_input_per_mtok: float = _f(0.0, "USD per million prompt tokens, for the cost report")
    price_output_per_mtok: float = _f(0.0, "USD per million completion tokens, for the cost report")
    options: dict[str, Any] = component_options("chat_provider", "provider", "the provider's own options (each bundled "
                                                "provider's are listed in docs/providers.md; a key the provider does not "
                                                "declare is refused)")

    def cost_usd(self, prompt_tokens: float, completion_tokens: float, batch: bool = False) -> float:
        """What these tokens cost at this endpoint's prices; ``batch`` applies the batch price factor."""
        online = (prompt_tokens * self.price_input_per_mtok + completion_tokens * self.price_output_per_mtok) / 1e6
        return online * self.batch_price_factor if batch else online


@dataclass
class RolesConfig:
    user_simulator: str = _f("local", "endpoint that writes the simulated user's turns")
    assistant_simulator: str = _f("local", "endpoint that answers in both branches")
    contrast: str | None = _f(None, "endpoint that rewrites instructions (default: assistant_simulator)")
    policy: str = _f("local", "endpoint whose samples Best-of-N picks from")
    judge: str = _f("local", "endpoint of the pairwise LLM judge")
    auditor: str | None = _f(None, "endpoint that audits the synthetic pairs (`music audit`; default: the judge's). "
                                   "Best kept apart from the simulators: a model judging its own answers prefers them")


# Roles that may be left unset, and the role whose endpoint they then use.
ROLE_DEFAULTS = {"contrast": "assistant_simulator", "auditor": "judge"}


def role_endpoint(cfg: MusicConfig, role: str) -> str:
    """The endpoint name a role uses (``contrast`` defaults to the assistant simulator's,
    ``auditor`` to the judge's)."""
    if role.startswith("judge:"):  # an LLM judge scored beside the RMs (eval.judges)
        judges = getattr(cfg.eval, "judges", None) or {}
        if role[len("judge:"):] in judges:
            return str(judges[role[len("judge:"):]])
    name = getattr(cfg.roles, role, None)
    if name is None and role in ROLE_DEFAULTS:
        name = getattr(cfg.roles, ROLE_DEFAULTS[role])
    if name is None:
        raise KeyError(role)
    return str(name)


@dataclass
class RunConfig:
    output_dir: str = _f("runs/default", "where every stage writes; a rerun resumes here")
    seed: int = _f(0, "global seed")
    cache: str | None = _f(None, "SQLite LLM call cache (default: <output_dir>/llm-cache.sqlite)")
    progress: bool = _f(True, "show progress (bars on a terminal, else a line per stage every progress_interval_s)")
    progress_interval_s: float = _f(30.0, "seconds between progress lines when the output is not a terminal")
    stages: list[str] = _f(["synth", "audit", "mix", "train", "eval"], "stages `music run` executes, in order")
    dry_run: bool = _f(False, "print the plan and estimates; call nothing")
    preflight: bool = _f(True, "before its first call, `music run` checks what its later stages need (memory plan, "
                               "data paths and columns, key variables, component names) and refuses with every "
                               "problem found; false skips the check")
    shared_dir: str | None = _f(None, "a folder of steps shared between runs (`music sweep` sets it): a step whose "
                                      "inputs hash is already made there is linked, not made again")


@dataclass
class DataSourceConfig:
    source: str = _f("builtin", "registered seed source: builtin, builtin-prompts, skywork, trl, sharegpt, jsonl, hh-rlhf, ultrainteract")
    path: str | None = _f(None, "hub id, local file or folder (builtin sources ignore it)")
    format: str = _f("auto", "record format: auto, skywork, trl, sharegpt, messages, music")
    split: str = _f("train", "dataset split when loading through `datasets`")
    limit: int | None = _f(None, "use at most this many records (after a seeded shuffle)")


@dataclass
class RecordsConfig:
    """The rule for records in every file read (seeds, original data, evaluation sets, audit
    inputs, the inspect page): a bad file is an error; an unusable record is skipped, counted by
    reason, named in the report and written to a side file."""

    max_invalid_fraction: float = _f(0.05, "largest share of the records one read takes in (a stage's seeds, its "
                                           "original data, an evaluator's data set, all its files together) that may "
                                           "be skipped as unusable (an empty user turn, identical sides, roles out of "
                                           "order, a non-text part); above it the read is an error naming the totals")
    strict: bool = _f(False, "stop at the first unusable record (for CI)")


@dataclass
class SeedsConfig(DataSourceConfig):
    limit: int | None = _f(8, "seeds to roll out (after a seeded shuffle); null for all")
    min_context_turns: int = _f(0, "fewest earlier exchanges kept before the first simulated user turn")
    max_context_turns: int = _f(3, "most earlier exchanges kept (cut at a random turn boundary)")
    seed: int = _f(0, "seed of the shuffle and of the cut points")


@dataclass
class SynthConfig:
    turns: int = _f(3, "T: simulated turns per branch (paper: 5)")
    strategy: str = _f("instruction-contrast", "contrast strategy applied in the rejected branch")
    strategy_options: dict[str, Any] = component_options("contrast_strategy", "strategy", "options of the contrast strategy")
    fallback_strategy: str | None = _f("forget-history", "strategy for a turn the main one cannot contrast "
                                          "(a rewrite that never validates); null makes such turns error rows, as in the paper")
    prompt_profile: str = _f("auto", "paper (the paper's prompts: full history, the assistant sees only the modified "
                             "instruction), small-model (simplifications that help a 135M model; docs/prompt-profiles.md), "
                             "or auto: small-model when every synthesis role runs on the `local` provider, else paper")
    user_simulator: str = _f("auto", "registered user simulator; auto: transcript (paper profile) or role-flip (small-model)")
    user_simulator_options: dict[str, Any] = component_options("simulator", "user_simulator", "options of the user simulator")
    assistant_simulator: str = _f("default", "registered assistant simulator")
    assistant_simulator_options: dict[str, Any] = component_options("simulator", "assistant_simulator",
                                                                     "options of the assistant simulator")
    shared_user_turns: bool = _f(False, "variant: the rejected branch reuses the chosen branch's user turns")
    contrast_from_turn: int = _f(1, "variant: apply contrast from this simulated turn on (1 = every turn, the paper)")
    max_context_tokens: int = _f(3072, "stop a rollout early once a branch reaches this many tokens (estimated)")
    concurrency: int = _f(32, "rollouts in flight at once")
    max_error_rate: float = _f(0.5, "largest share of finished seeds that may end as final errors (a prompt the server "
                                    "refuses, a safety block, a turn no strategy could contrast); above it the stage "
                                    "exits 6 after writing everything, naming the errors")
    output: str | None = _f(None, "pairs JSONL (default: <output_dir>/synth/pairs.jsonl)")
    filter: str | None = _f("distinct-answers", "registered pair filter applied before a pair is written (null: none)")
    filter_options: dict[str, Any] = component_options("pair_filter", "filter", "options of the pair filter")
    shard: str | None = _f(None, "i/n: synthesize only seeds i, i+n, ... into a shard file")


@dataclass
class AuditConfig:
    """``music audit``: an independent judge of every synthetic pair, whole conversation and each
    contrasted turn, in both orders, calibrated on pairs whose answer is known."""

    pairs: str | None = _f(None, "pairs to audit: any preference file the readers accept (default: the synthesis output)")
    format: str = _f("auto", "record format of audit.pairs: auto, music, skywork, trl, sharegpt")
    limit: int | None = _f(None, "audit at most this many pairs (a seeded sample); null: every pair")
    judge: str = _f("pairwise", "registered judge of the whole conversations")
    judge_options: dict[str, Any] = component_options("judge", "judge", "options of the whole-conversation judge")
    turn_judge: str | None = _f("last-turn", "registered judge of each contrasted turn (the last answer of each "
                                              "branch given its own history); null: whole conversations only")
    turn_judge_options: dict[str, Any] = component_options("judge", "turn_judge", "options of the per-turn judge")
    calibration_pairs: int = _f(16, "known-answer pairs to calibrate the auditor on (a seeded sample of "
                                    "audit.known_pairs, or of the mix's original data); 0: no calibration")
    known_pairs: str | None = _f(None, "a preference file whose chosen side is known better, for calibration "
                                       "(default: mix.original, as the mix reads it; with audit.pairs set: none)")
    labels: str | None = _f(None, "human labels (labels.jsonl, written by `music inspect`) to measure agreement with "
                                   "(default: labels.jsonl beside the pairs, when there is one)")
    reward_models: dict[str, str] = _f({}, "name -> RM folder, for human vs RM agreement (default: the run's RMs)")
    unreadable_stop: int = _f(12, "stop the run when the auditor's first this many verdicts are all unreadable")
    concurrency: int = _f(32, "pairs audited at once (batch mode: all)")
    seed: int = _f(0, "seed of the samples")
    output_dir: str | None = _f(None, "default: <output_dir>/audit")


@dataclass
class MixAuditConfig:
    min_p: float | None = _f(None, "drop synthetic pairs whose audited probability that chosen is better is below "
                                   "this (unreadable verdicts are dropped too); null: keep every pair")


@dataclass
class MixConfig:
    synthetic: list[str] = _f([], "synthetic pair files or globs (default: the synth output and its shards)")
    original: DataSourceConfig = field(default_factory=lambda: DataSourceConfig(source="builtin"),
                                       metadata={"help": "the original preference data"})
    synthetic_count: int | None = _f(None, "synthetic pairs to take (default: all)")
    original_count: int | None = _f(None, "original pairs to take (default: all)")
    synthetic_ratio: float | None = _f(None, "alternatively: synthetic share of the mix, 0..1 (paper: 31/104)")
    eval_fraction: float = _f(0.3, "share of each source held out for evaluation (by conversation group)")
    dedupe: bool = _f(True, "drop pairs whose chosen and rejected conversations both repeat")
    seed: int = _f(0, "shuffle and split seed")
    audit: MixAuditConfig = field(default_factory=MixAuditConfig,
                                  metadata={"help": "acting on the audit (`music audit`)"})
    output_dir: str | None = _f(None, "default: <output_dir>/mix")


@dataclass
class TrainConfig:
    """The training stage's own keys. The selected trainer's options live beside them in the same
    ``train`` section: a trainer declares them as a subclass of this dataclass
    (``Trainer.config_class``), and the schema is assembled at load time for the trainer chosen."""

    trainer: str = _f("bradley-terry", "registered trainer")
    train_data: str | None = _f(None, "pairs JSONL (default: the mix's train split)")
    eval_data: str | None = _f(None, "held-out pairs JSONL (default: the mix's eval split)")
    output_dir: str | None = _f(None, "where the trained RM is saved (default: <output_dir>/rm)")


@dataclass
class ContaminationConfig:
    ngram: int = _f(13, "an item is contaminated when it shares this many consecutive words with a training prompt "
                        "(13: GPT-3's contamination analysis)")
    data: str | None = _f(None, "the RM's training pairs to compare with (default: the run's mix train split)")
    exclude: bool = _f(False, "score without the contaminated items (they are counted either way)")


@dataclass
class EvalConfig:
    """The evaluation stage's own keys. Each selected evaluator (listed in ``evaluators``, or run
    by ``music eval <command>``) adds its options as a section ``eval.<config_key>``
    (``Evaluator.config_class``), assembled at load time."""

    reward_models: dict[str, str] = _f({}, "name -> RM folder; `music run` fills baseline and music")
    evaluators: list[str] = _f(["best-of-n", "pairwise-accuracy", "rewardbench", "rewardbench-2", "depth"],
                               "evaluators `music run` uses")
    contamination: ContaminationConfig = field(default_factory=ContaminationConfig,
                                               metadata={"help": "overlap of evaluation items with the training prompts"})
    output_dir: str | None = _f(None, "default: <output_dir>/eval")
    judges: dict[str, str] = _f({}, "name -> endpoint (under models): an LLM judge scored beside the RMs in every "
                                    "pairwise evaluator, on the same items (`music eval X --judge NAME=ENDPOINT`)")
    judge: str = _f("pairwise", "registered judge the eval.judges endpoints answer as (both orders)")
    judge_options: dict[str, Any] = component_options("judge", "judge", "options of that judge")


@dataclass
class SweepConfig:
    """``music sweep``: variants of the run, each a whole ``music run``."""

    name: str | None = _f(None, "the sweep's name: its folder and the trackers' group (default: from the swept keys)")
    grid: dict[str, list[Any]] = _f({}, "key -> values: every combination is a variant (with the command line's "
                                        "key=a,b overrides)")
    variants: list[dict[str, Any]] = _f([], "an explicit list of variants, each a mapping of keys to values "
                                            "(combined with the grid, if any)")
    reference: str | None = _f(None, "the variant the others are compared with (default: the first)")
    launcher: str = _f("local", "registered launcher: local, submitit")
    launcher_options: dict[str, Any] = component_options("launcher", "launcher", "options of the launcher")
    jobs: int = _f(1, "variants running at once (local launcher)")
    output_dir: str | None = _f(None, "default: runs/<name>")


def _default_models() -> dict[str, EndpointConfig]:
    # No provider options here: the local provider's own defaults (LocalOptions) hold them, so an
    # override that points this endpoint at another provider is checked only for what it sets.
    return {"local": EndpointConfig(
        provider="local", model="smollm2-135m", concurrency=32, temperature=0.8, top_p=0.95,
        max_tokens=96, timeout_s=600.0)}


@dataclass
class MusicConfig:
    run: RunConfig = field(default_factory=RunConfig, metadata={"help": "the run"})
    models: dict[str, EndpointConfig] = field(default_factory=_default_models, metadata={"help": "named LLM endpoints"})
    roles: RolesConfig = field(default_factory=RolesConfig, metadata={"help": "which endpoint plays which role"})
    records: RecordsConfig = field(default_factory=RecordsConfig,
                                   metadata={"help": "unusable records in real data: budget and strict switch"})
    seeds: SeedsConfig = field(default_factory=SeedsConfig, metadata={"help": "seed conversations"})
    synth: SynthConfig = field(default_factory=SynthConfig, metadata={"help": "MUSIC rollouts"})
    audit: AuditConfig = field(default_factory=AuditConfig, metadata={"help": "auditing the synthetic pairs"})
    mix: MixConfig = field(default_factory=MixConfig, metadata={"help": "mixing with the original data"})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "reward-model training"})
    eval: EvalConfig = field(default_factory=EvalConfig, metadata={"help": "evaluation"})
    sweep: SweepConfig = field(default_factory=SweepConfig, metadata={"help": "music sweep: variants of the run"})


def describe_keys(cfg: Any, obj: Any = None, prefix: str = "",
                  options_of: Any = None) -> list[tuple[str, str, Any, str]]:
    """(dotted key, type, current value, help) for every field, nested sections flattened;
    dict-valued sections of endpoints and prompt sets are listed per entry. ``options_of(kind,
    name)`` (the registry's view) adds the options the selected components declare under their
    ``*_options`` key, with the value the config gives or the default."""
    import dataclasses

    obj = cfg if obj is None else obj
    rows: list[tuple[str, str, Any, str]] = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            rows += describe_keys(cfg, value, key + ".", options_of)
        elif isinstance(value, dict) and value and all(dataclasses.is_dataclass(v) for v in value.values()):
            for name, entry in value.items():
                rows += describe_keys(cfg, entry, f"{key}.{name}.", options_of)
        else:
            type_name = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            rows.append((key, type_name, value, f.metadata.get("help", "")))
            kind = f.metadata.get("component_kind")
            selected = getattr(obj, f.metadata.get("selected_by", ""), None) if kind else None
            declared = options_of(kind, selected) if (options_of and selected) else None
            for opt in dataclasses.fields(declared) if declared else ():
                default = opt.default if opt.default is not dataclasses.MISSING else (
                    opt.default_factory() if opt.default_factory is not dataclasses.MISSING else None)
                opt_type = opt.type if isinstance(opt.type, str) else getattr(opt.type, "__name__", str(opt.type))
                rows.append((f"{key}.{opt.name}", opt_type, value.get(opt.name, default),
                             opt.metadata.get("help") or f"option of {str(kind).replace('_', ' ')} {selected!r}"))
    return rows
