"""``music mix``: synthesized pairs + original preference data -> train and eval splits.

Deduplicates, takes counts or a ratio (the paper: 31k MUSIC + 73k Skywork), and splits by
*conversation group*: a synthetic pair grown from a seed conversation lands on the same side as
the original pair that conversation came from, so held-out accuracy is not inflated by leaks.
Writes ``train.jsonl``, ``eval.jsonl``, ``original_train.jsonl`` (the baseline RM's data) and
``summary.json`` (with what was read, kept and skipped), each atomically, and the unusable
records it skipped to ``skipped_records.jsonl``.
"""

from __future__ import annotations

import glob
import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .data import PreferencePair, content_hash
from .errors import ConfigError, MusicError
from .formats import read_each
from .jsonl import iter_json_lines, write_jsonl_atomic, write_text_atomic
from .paths import MIX_FILES, SKIPPED_RECORDS, is_side_file
from .records import ReadTally
from .synth.seeds import group_key

if TYPE_CHECKING:
    from .config.schema import MixConfig
    from .context import RunContext


def synthetic_files(ctx: RunContext) -> list[Path]:
    """The synthetic pair files to mix. Files named in ``mix.synthetic`` must exist; by default
    the synth output and its shards are taken if there are any, and otherwise the original
    data is mixed alone (a baseline needs no synthesis)."""
    patterns = list(ctx.config.mix.synthetic)
    if not patterns:
        out = ctx.paths.synth_output
        found = ([out] if out.exists() else []) + ctx.paths.synth_shards()
        if not found:
            from . import progress

            progress.log(f"mix: no synthesized pairs at {out} (nor shards): mixing the original data alone")
        return found
    files: list[Path] = []
    for pat in patterns:
        matches = sorted(glob.glob(pat)) if any(ch in pat for ch in "*?[") else ([pat] if Path(pat).exists() else [])
        if not matches and not any(ch in pat for ch in "*?["):
            raise MusicError(f"mix: synthetic pair file not found: {pat} (run `music synth` first, or set mix.synthetic)")
        files += [Path(m) for m in matches if not is_side_file(m)]
    return files


def pair_group(pair: PreferencePair) -> str:
    return str(pair.meta.get("seed_group") or group_key(pair.chosen)) if pair.source == "music" else group_key(pair.chosen)


def dedupe(pairs: list[PreferencePair]) -> tuple[list[PreferencePair], int]:
    seen_keys, seen_ids, out = set(), set(), []
    for p in pairs:
        key = p.dedupe_key()
        if key in seen_keys or p.id in seen_ids:
            continue
        seen_keys.add(key)
        seen_ids.add(p.id)
        out.append(p)
    return out, len(pairs) - len(out)


def counts(n_syn: int, n_orig: int, cfg: MixConfig) -> tuple[int, int]:
    """How many synthetic and original pairs to take. A count the data cannot meet is an error
    naming its key, never quietly capped."""
    if cfg.synthetic_ratio is not None and (cfg.synthetic_count is not None or cfg.original_count is not None):
        raise ConfigError("config key 'mix.synthetic_ratio': set either the ratio or the counts "
                          "(mix.synthetic_count / mix.original_count), not both")
    for key, want, have in (("synthetic_count", cfg.synthetic_count, n_syn), ("original_count", cfg.original_count, n_orig)):
        if want is not None and want > have:
            raise ConfigError(f"config key 'mix.{key}': asks for {want} pairs but only {have} are available "
                              f"(after removing duplicates)")
    syn = n_syn if cfg.synthetic_count is None else cfg.synthetic_count
    orig = n_orig if cfg.original_count is None else cfg.original_count
    return syn, orig


def ratio_counts(n_syn: int, n_orig: int, ratio: float) -> tuple[int, int]:
    """The most pairs whose synthetic share is ``ratio`` (applied to the train split)."""
    if ratio > 0 and n_syn == 0:
        raise ConfigError(f"config key 'mix.synthetic_ratio': {ratio} needs synthetic pairs, and the train split has none")
    if ratio < 1 and n_orig == 0:
        raise ConfigError(f"config key 'mix.synthetic_ratio': {ratio} needs original pairs, and the train split has none")
    if ratio >= 1.0:
        return n_syn, 0
    if ratio <= 0.0:
        return 0, n_orig
    if n_syn / (n_syn + n_orig) > ratio:
        return min(n_syn, round(ratio / (1 - ratio) * n_orig)), n_orig
    return n_syn, min(n_orig, round((1 - ratio) / ratio * n_syn))


def split(pairs: list[PreferencePair], fraction: float, seed: int) -> tuple[list[PreferencePair], list[PreferencePair]]:
    train: list[PreferencePair] = []
    held: list[PreferencePair] = []
    for p in pairs:
        # a stable per-group draw: the same group falls on the same side whatever else is mixed in
        u = int(content_hash(seed, pair_group(p)), 16) / 16 ** 16
        (held if u < fraction else train).append(p)
    return train, held


def drop_by_audit(ctx: RunContext, synthetic: list[PreferencePair]) -> tuple[list[PreferencePair], dict[str, Any]]:
    """Keep the synthetic pairs whose audited P(chosen better) reaches ``mix.audit.min_p``; an
    unreadable verdict has no probability and is dropped. A pair the audit never saw is an
    error: filtering on a partial audit would keep the unjudged pairs silently."""
    min_p = ctx.config.mix.audit.min_p
    path = ctx.paths.audit_file("audit")
    if not path.exists():
        raise ConfigError(f"config key 'mix.audit.min_p': set, but there is no audit at {path} "
                          f"(run `music audit`, or the audit stage of `music run`, first)")
    p_of = {str(row["id"]): row.get("p_chosen") for _, row in iter_json_lines(path)}
    unaudited = [p.id for p in synthetic if p.id not in p_of]
    if unaudited:
        raise MusicError(f"mix: {len(unaudited)} of {len(synthetic)} synthetic pairs have no audit record in {path} "
                         f"(first: {unaudited[0]}); rerun `music audit` so every pair is judged, or unset mix.audit.min_p")
    kept = [p for p in synthetic if p_of[p.id] is not None and p_of[p.id] >= min_p]
    unreadable = sum(p_of[p.id] is None for p in synthetic)
    return kept, {"min_p": min_p, "audit": str(path), "kept": len(kept), "dropped": len(synthetic) - len(kept),
                  "dropped_unreadable": unreadable}


def _write_skipped(path: Path, *tallies: ReadTally) -> Path | None:
    together = ReadTally("mix")
    for t in tallies:
        together.side += t.side
    return together.write_side_file(path)


def run_mix(ctx: RunContext) -> dict[str, Any]:
    cfg = ctx.config.mix
    files = synthetic_files(ctx)
    source = ctx.component("seed_source", cfg.original.source).require("pairs", "mix.original.source")
    # A bad file stops here with nothing written; unusable records are skipped, counted and listed.
    # The run's own synthesis output may rightly be empty; a file the user named may not.
    own = not cfg.synthetic
    with ctx.reading("mix") as read_synthetic:
        synthetic = [p for f in files for p in read_each(str(f), PreferencePair.from_dict, allow_empty=own)]
    with ctx.reading("mix.original") as read_original:
        original = source.load_pairs(cfg.original)
    audit = None
    if cfg.audit.min_p is not None:
        synthetic, audit = drop_by_audit(ctx, synthetic)
    if cfg.original.limit is not None and cfg.original.limit < len(original):  # a seeded shuffle, then the cut
        original = random.Random(cfg.seed).sample(original, cfg.original.limit)
    drop = dedupe if cfg.dedupe else (lambda pairs: (pairs, 0))
    synthetic, dup_syn = drop(synthetic)
    original, dup_orig = drop(original)
    rng = random.Random(cfg.seed)
    # The original data draws from its own generator: the baseline's data must not depend on how
    # many synthetic pairs there are, so that runs (and sweep variants) that differ only in
    # synthesis share one baseline RM.
    orig_rng = random.Random(f"{cfg.seed}:original")
    n_syn, n_orig = counts(len(synthetic), len(original), cfg)
    synthetic = rng.sample(synthetic, n_syn) if n_syn < len(synthetic) else synthetic
    original = orig_rng.sample(original, n_orig) if n_orig < len(original) else original
    syn_train, syn_eval = split(synthetic, cfg.eval_fraction, cfg.seed)
    orig_train, orig_eval = split(original, cfg.eval_fraction, cfg.seed)
    if cfg.synthetic_ratio is not None:  # the ratio is what the reward model trains on
        k_syn, k_orig = ratio_counts(len(syn_train), len(orig_train), cfg.synthetic_ratio)
        syn_train = rng.sample(syn_train, k_syn) if k_syn < len(syn_train) else syn_train
        orig_train = orig_rng.sample(orig_train, k_orig) if k_orig < len(orig_train) else orig_train
    train, held = syn_train + orig_train, syn_eval + orig_eval
    train, dup_cross = drop(train)
    rng.shuffle(train)
    orig_rng.shuffle(orig_train)
    held.sort(key=lambda p: (p.source, p.id))
    paths = ctx.paths
    for name, rows in zip(MIX_FILES, (train, held, orig_train)):
        write_jsonl_atomic(paths.mix_file(name), (p.to_dict() for p in rows))
    summary: dict[str, Any] = {
        "synthetic_files": [str(f) for f in files],
        "original_source": cfg.original.source, "original_path": cfg.original.path,
        "duplicates_dropped": {"synthetic": dup_syn, "original": dup_orig, "across": dup_cross},
        "train": {"total": len(train), "synthetic": len(syn_train), "original": len(orig_train)},
        "eval": {"total": len(held), "synthetic": len(syn_eval), "original": len(orig_eval)},
        "synthetic_share_of_train": round(len(syn_train) / max(1, len(train)), 4),
        "outputs": {k: str(paths.mix_file(k)) for k in MIX_FILES},
    }
    summary["records"] = {"synthetic": read_synthetic.summary(), "original": read_original.summary()}
    side = _write_skipped(paths.mix_dir / SKIPPED_RECORDS, read_synthetic, read_original)
    if side:
        summary["records"]["skipped_file"] = str(side)
    if audit is not None:
        summary["audit"] = audit
    write_text_atomic(paths.mix_file("summary"), json.dumps(summary, indent=2) + "\n")
    return summary
