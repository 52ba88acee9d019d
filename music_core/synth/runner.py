"""``music synth``: seeds -> rollouts -> pairs JSONL, concurrently, resumably, in a stable order.

Pairs are written in seed order (a small reorder buffer holds finished rollouts until those
before them are written), so a run that is killed and restarted ends with the same file as one
that was not; the restart skips ids already written, and the LLM cache answers every call the
killed run already made.

What a rerun does with each outcome:

- a pair: kept, skipped.
- a content failure (a contrast that cannot be made, an invalid pair): a final row in
  ``<output>.errors.jsonl`` with its reason; skipped. Pairs a filter rejects go to
  ``<output>.filtered.jsonl``; skipped.
- a transient failure (retries exhausted on 429/5xx/timeouts/dropped connections): nothing is
  written; the run exits non-zero naming how many pairs are missing, and the rerun makes them.
- an endpoint's fatal error (missing key, 401/403, unknown model, unreachable base_url): the
  run stops at once, naming the role and endpoint, and exits non-zero.

Once nothing is missing, the file is put in seed order (pairs made by a later run after a
transient failure would otherwise sit at the end), so every complete run of one config writes
the same file.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import progress
from ..config import parse_shard, resolve_prompt_profile, resolve_user_simulator
from ..config.load import SYNTH_ROLES
from ..contracts import AssistantSimulator, UserSimulator
from ..data import content_hash
from ..errors import ConfigError, MusicError, RecordError
from ..jsonl import AppendOnlyJsonl, iter_json_lines, write_lines_atomic, write_text_atomic
from ..llm.errors import EndpointFatalError, LLMError
from ..paths import side_paths
from ..tasks import cancel_all, until_first_failure
from .rollout import RolloutEngine, RolloutResult, RolloutSettings, is_transient
from .seeds import Seed, select

if TYPE_CHECKING:
    from ..context import RunContext


class SynthIncomplete(MusicError):
    """Some pairs are missing after transient failures; rerunning the same command makes them."""

    exit_code = 75  # EX_TEMPFAIL: try again


class SynthFailed(MusicError):
    """More seeds ended as final errors than ``synth.max_error_rate`` allows: the stage did not
    deliver what it was asked, though everything it made is written."""

    exit_code = 6


def fingerprint(ctx: RunContext) -> dict[str, Any]:
    """Everything that changes what a pair would be; pair ids hash it."""
    c = ctx.config
    s = c.synth

    def endpoint(role: str) -> dict[str, Any]:
        name = getattr(c.roles, role) or c.roles.assistant_simulator
        ep = c.models[name]
        return {"provider": ep.provider, "model": ep.model, "temperature": ep.temperature,
                "top_p": ep.top_p, "max_tokens": ep.max_tokens}

    return {
        "seeds": {k: getattr(c.seeds, k) for k in ("source", "path", "format", "split", "min_context_turns",
                                                    "max_context_turns", "seed")},
        "synth": {"turns": s.turns, "strategy": s.strategy, "strategy_options": dict(s.strategy_options),
                  "fallback_strategy": s.fallback_strategy, "prompt_profile": resolve_prompt_profile(c)[0],
                  "user_simulator": resolve_user_simulator(c), "user_simulator_options": dict(s.user_simulator_options),
                  "assistant_simulator": s.assistant_simulator,
                  "assistant_simulator_options": dict(s.assistant_simulator_options),
                  "shared_user_turns": s.shared_user_turns, "contrast_from_turn": s.contrast_from_turn,
                  "max_context_tokens": s.max_context_tokens, "filter": s.filter, "filter_options": dict(s.filter_options)},
        "endpoints": {r: endpoint(r) for r in ("user_simulator", "assistant_simulator", "contrast")},
        "run_seed": c.run.seed,
    }


def load_seeds(ctx: RunContext, read: dict[str, Any] | None = None) -> list[Seed]:
    """The seeds to roll out; no seeds at all is an error (an empty run would look like success).
    Unusable seed records are skipped under the record rule, listed in ``synth/skipped_seeds.jsonl``
    and counted into ``read`` (for the report)."""
    cfg = ctx.config
    source = ctx.component("seed_source", cfg.seeds.source).require("conversations", "seeds.source")
    with ctx.reading("seeds") as tally:
        conversations = source.load_conversations(cfg.seeds)
    tally.write_side_file(ctx.synth_output().parent / "skipped_seeds.jsonl")
    if read is not None:
        read.update(tally.summary())
    where = cfg.seeds.path or f"the {cfg.seeds.source!r} seed source"
    if not conversations:
        raise RecordError(str(where), None, "holds no seed conversations (config key 'seeds.path')")
    seeds = select(conversations, cfg.seeds)
    if not seeds:
        raise RecordError(str(where), None, f"none of its {len(conversations)} conversations has a user turn "
                          f"to start a rollout from (or 'seeds.limit' is 0)")
    if cfg.synth.shard:
        i, n = parse_shard(cfg.synth.shard)
        seeds = seeds[i::n]
        if not seeds:
            raise ConfigError(f"config key 'synth.shard': shard {cfg.synth.shard} of {len(select(conversations, cfg.seeds))} "
                              f"seeds is empty; use fewer shards")
    return seeds


def build_engine(ctx: RunContext) -> RolloutEngine:
    cfg = ctx.config
    s = cfg.synth
    user = ctx.component("simulator", resolve_user_simulator(cfg), s.user_simulator_options)
    assistant = ctx.component("simulator", s.assistant_simulator, s.assistant_simulator_options)
    if not isinstance(user, UserSimulator):
        raise ConfigError(f"config key 'synth.user_simulator': {s.user_simulator!r} is not a user simulator")
    if not isinstance(assistant, AssistantSimulator):
        raise ConfigError(f"config key 'synth.assistant_simulator': {s.assistant_simulator!r} is not an assistant simulator")
    strategy = ctx.component("contrast_strategy", s.strategy, s.strategy_options)
    fallback = ctx.component("contrast_strategy", s.fallback_strategy, {}) if s.fallback_strategy else None
    clients = {r: ctx.role(r) for r in ("user_simulator", "assistant_simulator", "contrast")}
    fp = fingerprint(ctx)
    profile, why = resolve_prompt_profile(cfg)
    provenance = {"strategy": s.strategy, "prompt_profile": profile, "prompt_profile_reason": why, "endpoints": {r: f"{e['provider']}:{e['model']}" for r, e in fp["endpoints"].items()},
                  "simulators": {"user": user.name, "assistant": assistant.name},
                  "templates": {k: getattr(getattr(x, "template", None), "tag", None)
                                for k, x in (("user", user), ("assistant", assistant), ("strategy", strategy))},
                  "config_hash": content_hash(fp)}
    settings = RolloutSettings(turns=s.turns, contrast_from_turn=s.contrast_from_turn,
                               shared_user_turns=s.shared_user_turns, max_context_tokens=s.max_context_tokens)
    return RolloutEngine(user=user, assistant=assistant, strategy=strategy, clients=clients, settings=settings,
                         provenance=provenance, seed=cfg.run.seed, fallback=fallback)


def check_output_config(out: Path, fp: dict[str, Any]) -> None:
    """Refuse to append pairs of one config to a file made with another. A file that holds no
    pair yet is no obstacle: a corrected config (a fixed model name, a key) just takes over, and
    the old config's error rows are set aside under a name of their own."""
    paths = side_paths(out)
    cfg_path = paths["config"]
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        if old != fp:
            changed = sorted(k for k in set(old) | set(fp) if old.get(k) != fp.get(k))
            if out.exists() and out.stat().st_size > 0:
                raise ConfigError(f"{out} was made with a different config (differs in: {', '.join(changed)}); "
                                  f"set synth.output to a new file, or delete it to start over")
            old_hash = content_hash(old)[:8]
            for side in ("errors", "filtered"):
                if paths[side].exists():
                    paths[side].rename(paths[side].with_name(f"{out.stem}.{side}.config-{old_hash}.jsonl"))
    write_text_atomic(cfg_path, json.dumps(fp, indent=2, sort_keys=True) + "\n")


def canonical_order(out: Path, order: list[str]) -> bool:
    """Put the pairs file in seed order (by rewriting its lines, byte for byte, atomically).
    Reads ids first: the usual file is already in order and is left alone."""
    if not out.exists():
        return False
    ids = [str(obj["id"]) for _, obj in iter_json_lines(out)]
    rank = {pid: i for i, pid in enumerate(order)}
    position = {pid: i for i, pid in enumerate(ids)}
    wanted = sorted(ids, key=lambda pid: (rank.get(pid, len(rank)), position[pid]))
    if wanted == ids:
        return False
    with out.open("r", encoding="utf-8") as fh:
        lines = {str(json.loads(line)["id"]): line for line in fh if line.strip()}
    write_lines_atomic(out, (lines[pid] for pid in wanted))
    return True


async def synthesize(ctx: RunContext) -> dict[str, Any]:
    cfg = ctx.config
    out = ctx.synth_output()
    seeds_read: dict[str, Any] = {}
    seeds = load_seeds(ctx, seeds_read)  # bad or empty seed files fail here, before anything is written
    engine = build_engine(ctx)
    pair_filter = ctx.component("pair_filter", cfg.synth.filter, cfg.synth.filter_options) if cfg.synth.filter else None
    ctx.llm.preflight(list(SYNTH_ROLES))  # a missing key stops the run before any call
    fp = fingerprint(ctx)
    config_hash = content_hash(fp)
    check_output_config(out, fp)
    paths = side_paths(out)
    writer, filtered = AppendOnlyJsonl(out), AppendOnlyJsonl(paths["filtered"])
    # Only final error rows mark a pair as done (rows of older versions may be transient ones).
    errors = AppendOnlyJsonl(paths["errors"], counts=lambda row: row.get("final") is True)
    done = writer.done_ids | errors.done_ids | filtered.done_ids
    jobs = [(seed, f"music-{content_hash(config_hash, seed.id)}") for seed in seeds]
    todo = [(s, pid) for s, pid in jobs if pid not in done]
    stats: dict[str, Any] = {"seeds": len(seeds), "seeds_read": seeds_read, "already_done": len(jobs) - len(todo), "written": 0, "errors": 0,
                             "filtered": 0, "missing": 0, "transient": {}}
    transient: Counter[str] = Counter()
    task = progress.Task("synth", total=len(jobs), unit="pairs", detail=ctx.llm.totals,
                         completed=len(jobs) - len(todo))
    # Batch mode runs as a wavefront: every conversation in flight at once, so that each round
    # (user turns, answers, rewrites) reaches the batch endpoint as one job, not as many.
    batch_roles = [r for r in SYNTH_ROLES if cfg.models[ctx.llm.endpoint_name(r)].mode == "batch"]
    in_flight = max(1, len(todo) if batch_roles else cfg.synth.concurrency)
    stats["conversations_in_flight"] = in_flight
    sem = asyncio.Semaphore(in_flight)
    finished: dict[int, RolloutResult] = {}
    next_to_write = 0

    def record(index: int, res: RolloutResult) -> None:
        s, p = todo[index]
        if res.pair is not None:
            writer.append(res.pair.to_dict())
            stats["written"] += 1
        elif res.stop_reason == "transient":
            transient[res.error or "?"] += 1  # nothing written: the next run makes this pair
        elif res.stop_reason == "filtered":
            filtered.append({"id": p, "seed_id": s.id, "reason": res.error})
            stats["filtered"] += 1
        else:
            errors.append({"id": p, "seed_id": s.id, "final": True, "error": res.error, "stage": res.stop_reason,
                           "user_turn_attempts": res.user_turn_attempts,
                           "user_turn_rejections": res.user_turn_rejections})
            stats["errors"] += 1
        task.update(info=f"{stats['written']} pairs written · {stats['errors']} errors · {stats['filtered']} filtered"
                         + (f" · {sum(transient.values())} to retry" if transient else ""))

    def write_ready() -> None:
        nonlocal next_to_write
        while next_to_write in finished:  # write in seed order
            record(next_to_write, finished.pop(next_to_write))
            next_to_write += 1

    async def one(index: int, seed: Seed, pid: str) -> None:
        async with sem:
            try:
                result = await engine.run(seed, pid)
                if result.pair is not None and pair_filter is not None:
                    verdict = await pair_filter.keep(result.pair)
                    if not verdict.keep:
                        result = RolloutResult(None, f"filtered: {verdict.reason}", "filtered", result.user_turn_attempts)
            except Exception as exc:
                if not isinstance(exc, LLMError) or not is_transient(exc):
                    raise  # an endpoint's fatal error (or a bug): stop the run
                result = RolloutResult(None, exc.kind, "transient")
        finished[index] = result
        task.advance(1)  # finished, even if it waits for earlier seeds before it is written
        write_ready()

    tasks = [asyncio.ensure_future(one(i, s, p)) for i, (s, p) in enumerate(todo)]
    try:
        await until_first_failure(tasks)
    finally:
        await cancel_all(tasks)
        for index in sorted(finished):  # whatever finished after a gap is kept, not redone
            record(index, finished.pop(index))
        writer.close()
        errors.close()
        filtered.close()
        task.close()
    complete = writer.done_ids | errors.done_ids | filtered.done_ids
    missing = [pid for _, pid in jobs if pid not in complete]
    stats["missing"] = len(missing)
    stats["transient"] = dict(transient)
    if not missing:
        stats["reordered"] = canonical_order(out, [pid for _, pid in jobs])
    stats["usage"] = ctx.llm.usage_report()
    endpoints = ctx.llm.batch_report()
    if endpoints:
        stats["endpoints"] = endpoints
    stats["output"] = str(out)
    return stats


def run_synth(ctx: RunContext) -> dict[str, Any]:
    """The whole synth stage: synthesize, write the report, release endpoints and threads.
    Raises :class:`SynthIncomplete` (exit 75) when pairs are missing after transient failures,
    and the endpoint's :class:`EndpointFatalError` (exit 5) when an endpoint cannot serve."""
    from . import report

    async def go() -> dict[str, Any]:
        try:
            return await synthesize(ctx)
        finally:
            await ctx.aclose()

    try:
        stats = asyncio.run(go())
    except EndpointFatalError:
        if ctx.synth_output().exists():
            report.write(ctx.synth_output(), {})
        raise
    md_path, done = report.write(ctx.synth_output(), stats["usage"], stats)
    stats["report"] = str(md_path)
    if stats["missing"]:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(stats["transient"].items())) or "interrupted"
        raise SynthIncomplete(
            f"synth incomplete: {stats['missing']} of {stats['seeds']} pairs are missing after transient failures "
            f"({kinds}). Written this run: {stats['written']} pairs, {stats['errors']} final errors, "
            f"{stats['filtered']} filtered; report: {stats['report']}. Finished pairs and every answered call are "
            f"kept: rerun the same command to make the missing ones.")
    limit = ctx.config.synth.max_error_rate
    if done["errors"] and done["error_rate"] > limit:
        kinds = ", ".join(f"{k} {v}" for k, v in done["error_kinds"].items())
        raise SynthFailed(
            f"synth failed: {done['errors']} of {done['pairs'] + done['errors'] + done['filtered']} seeds ended as final "
            f"errors ({done['error_rate']:.0%}, above synth.max_error_rate {limit:.0%}): {kinds}. The {done['pairs']} pairs "
            f"made are in {ctx.synth_output()}, each error's reason in {side_paths(ctx.synth_output())['errors']}; "
            f"report: {md_path}. Fix the cause and delete the errors file to retry those seeds, or raise "
            f"synth.max_error_rate to accept them.")
    return stats
