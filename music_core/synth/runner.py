"""``music synth``: seeds -> rollouts -> pairs JSONL, concurrently, resumably, in a stable order.

Pairs are written in seed order (a small reorder buffer holds finished rollouts until those
before them are written), so a run that is killed and restarted ends with the same file as one
that was not; the restart skips ids already written, and the LLM cache answers every call the
killed run already made. Rollouts that fail go to ``<output>.errors.jsonl``, pairs a filter
rejects to ``<output>.filtered.jsonl``; both count as done on resume.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from .. import progress
from ..contracts import AssistantSimulator, UserSimulator
from ..data import content_hash
from ..errors import ConfigError
from ..jsonl import AppendOnlyJsonl, write_text_atomic
from .rollout import RolloutEngine, RolloutResult, RolloutSettings
from .seeds import Seed, select


def side_paths(out: Path) -> dict[str, Path]:
    return {"errors": out.with_name(out.stem + ".errors.jsonl"),
            "filtered": out.with_name(out.stem + ".filtered.jsonl"),
            "config": out.with_name(out.stem + ".config.json")}


def fingerprint(ctx: Any) -> dict[str, Any]:
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
                  "fallback_strategy": s.fallback_strategy,
                  "user_simulator": s.user_simulator, "user_simulator_options": dict(s.user_simulator_options),
                  "assistant_simulator": s.assistant_simulator,
                  "assistant_simulator_options": dict(s.assistant_simulator_options),
                  "shared_user_turns": s.shared_user_turns, "contrast_from_turn": s.contrast_from_turn,
                  "max_context_tokens": s.max_context_tokens, "filter": s.filter, "filter_options": dict(s.filter_options)},
        "endpoints": {r: endpoint(r) for r in ("user_simulator", "assistant_simulator", "contrast")},
        "run_seed": c.run.seed,
    }


def load_seeds(ctx: Any) -> list[Seed]:
    cfg = ctx.config
    source = ctx.component("seed_source", cfg.seeds.source)
    seeds = select(source.load_conversations(cfg.seeds), cfg.seeds)
    if cfg.synth.shard:
        i, n = (int(x) for x in cfg.synth.shard.split("/"))
        seeds = seeds[i::n]
    return seeds


def build_engine(ctx: Any) -> RolloutEngine:
    cfg = ctx.config
    s = cfg.synth
    user = ctx.component("simulator", s.user_simulator, s.user_simulator_options)
    assistant = ctx.component("simulator", s.assistant_simulator, s.assistant_simulator_options)
    if not isinstance(user, UserSimulator):
        raise ConfigError(f"config key 'synth.user_simulator': {s.user_simulator!r} is not a user simulator")
    if not isinstance(assistant, AssistantSimulator):
        raise ConfigError(f"config key 'synth.assistant_simulator': {s.assistant_simulator!r} is not an assistant simulator")
    strategy = ctx.component("contrast_strategy", s.strategy, s.strategy_options)
    fallback = ctx.component("contrast_strategy", s.fallback_strategy, {}) if s.fallback_strategy else None
    clients = {r: ctx.role(r) for r in ("user_simulator", "assistant_simulator", "contrast")}
    fp = fingerprint(ctx)
    provenance = {"strategy": s.strategy, "endpoints": {r: f"{e['provider']}:{e['model']}" for r, e in fp["endpoints"].items()},
                  "simulators": {"user": user.name, "assistant": assistant.name},
                  "templates": {k: getattr(getattr(x, "template", None), "tag", None)
                                for k, x in (("user", user), ("assistant", assistant), ("strategy", strategy))},
                  "config_hash": content_hash(fp)}
    settings = RolloutSettings(turns=s.turns, contrast_from_turn=s.contrast_from_turn,
                               shared_user_turns=s.shared_user_turns, max_context_tokens=s.max_context_tokens)
    return RolloutEngine(user=user, assistant=assistant, strategy=strategy, clients=clients, settings=settings,
                         provenance=provenance, seed=cfg.run.seed, fallback=fallback)


def check_output_config(out: Path, fp: dict[str, Any]) -> None:
    """Refuse to append pairs of one config to a file made with another."""
    cfg_path = side_paths(out)["config"]
    if out.exists() and cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        if old != fp:
            changed = sorted(k for k in set(old) | set(fp) if old.get(k) != fp.get(k))
            raise ConfigError(f"{out} was made with a different config (differs in: {', '.join(changed)}); "
                              f"set synth.output to a new file, or delete it to start over")
    write_text_atomic(cfg_path, json.dumps(fp, indent=2, sort_keys=True) + "\n")


async def synthesize(ctx: Any) -> dict[str, Any]:
    cfg = ctx.config
    out = ctx.synth_output()
    seeds = load_seeds(ctx)  # bad seed files fail here, before anything is written
    engine = build_engine(ctx)
    pair_filter = ctx.component("pair_filter", cfg.synth.filter, cfg.synth.filter_options) if cfg.synth.filter else None
    fp = fingerprint(ctx)
    config_hash = content_hash(fp)
    check_output_config(out, fp)
    paths = side_paths(out)
    writer, errors, filtered = AppendOnlyJsonl(out), AppendOnlyJsonl(paths["errors"]), AppendOnlyJsonl(paths["filtered"])
    done = writer.done_ids | errors.done_ids | filtered.done_ids
    jobs = [(seed, f"music-{content_hash(config_hash, seed.id)}") for seed in seeds]
    todo = [(s, pid) for s, pid in jobs if pid not in done]
    stats = {"seeds": len(seeds), "already_done": len(jobs) - len(todo), "written": 0, "errors": 0, "filtered": 0}
    task = progress.Task("synth", total=len(jobs))
    task.advance(len(jobs) - len(todo))
    sem = asyncio.Semaphore(max(1, cfg.synth.concurrency))
    finished: dict[int, RolloutResult] = {}
    next_to_write = 0

    async def one(index: int, seed: Seed, pid: str) -> None:
        nonlocal next_to_write
        async with sem:
            result = await engine.run(seed, pid)
            if result.pair is not None and pair_filter is not None:
                verdict = await pair_filter.keep(result.pair)
                if not verdict.keep:
                    result = RolloutResult(None, f"filtered: {verdict.reason}", "filtered", result.user_turn_attempts)
        finished[index] = result
        while next_to_write in finished:  # write in seed order
            res = finished.pop(next_to_write)
            s, p = todo[next_to_write]
            if res.pair is not None:
                writer.append(res.pair.to_dict())
                stats["written"] += 1
            elif res.stop_reason == "filtered":
                filtered.append({"id": p, "seed_id": s.id, "reason": res.error})
                stats["filtered"] += 1
            else:
                errors.append({"id": p, "seed_id": s.id, "error": res.error, "stage": res.stop_reason,
                               "user_turn_attempts": res.user_turn_attempts})
                stats["errors"] += 1
            next_to_write += 1
            task.advance(1, info=f"{stats['written']} pairs · {stats['errors']} errors · {stats['filtered']} filtered")

    try:
        await asyncio.gather(*(one(i, s, p) for i, (s, p) in enumerate(todo)))
    finally:
        writer.close()
        errors.close()
        filtered.close()
        task.close()
    stats["usage"] = ctx.llm.usage_report()
    stats["output"] = str(out)
    return stats



def run_synth(ctx: Any) -> dict[str, Any]:
    """The whole synth stage: synthesize, write the report, release endpoints and threads."""
    from . import report

    async def go() -> dict[str, Any]:
        try:
            return await synthesize(ctx)
        finally:
            await ctx.aclose()

    stats = asyncio.run(go())
    stats["report"] = str(report.write(ctx.synth_output(), stats["usage"])[1])
    return stats
