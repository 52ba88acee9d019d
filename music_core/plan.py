"""``music run --dry-run``: the plan, the calls per role and estimated tokens, calling nothing.

Counts are exact for the configured sizes (before retries); token counts are estimates:
completions at 70% of each endpoint's max_tokens, prompts growing with the conversation."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from .config.load import role_endpoint

if TYPE_CHECKING:
    from .context import RunContext

Rows = dict[str, dict[str, float]]


def tally(ctx: RunContext, fill: Callable[[Any, Callable[..., None]], None]) -> Rows:
    """Calls, samples and tokens per role, as ``fill(ctx, add)`` adds them."""
    c = ctx.config
    rows: Rows = defaultdict(lambda: defaultdict(float))

    def add(role: str, calls: float, samples: float, prompt_tok: float) -> None:
        r = rows[role]
        r["calls"] += calls
        r["samples"] += samples
        r["prompt_tokens"] += calls * prompt_tok
        r["completion_tokens"] += samples * 0.7 * c.models[role_endpoint(c, role)].max_tokens

    fill(ctx, add)
    return rows


def estimate(ctx: RunContext) -> Rows:
    """Every stage of ``music run`` that calls an LLM."""
    return tally(ctx, _run_calls)


def _run_calls(ctx: RunContext, add: Callable[..., None]) -> None:
    c = ctx.config

    def ep(role: str) -> Any:
        return c.models[role_endpoint(c, role)]

    if "synth" in c.run.stages:
        from .config import resolve_prompt_profile

        full_history = resolve_prompt_profile(c)[0] == "paper"  # the paper's prompts carry the whole conversation
        seeds, t_max = c.seeds.limit or 0, c.synth.turns
        rewrites = rewrite_calls_per_turn(ctx)
        turn_tok = 0.7 * ep("assistant_simulator").max_tokens + 40  # one exchange
        for t in range(1, t_max + 1):
            ctx_tok = 150 + (t - 1) * 2 * turn_tok
            add("assistant_simulator", 2 * seeds, 2 * seeds, ctx_tok + 40)
            if rewrites:
                add("contrast", rewrites * seeds, rewrites * seeds, 350 + (ctx_tok if full_history else 0))
            if t < t_max:
                sims = 1 if c.synth.shared_user_turns else 2
                shown = ctx_tok + turn_tok if full_history else min(4, 2 * t) * turn_tok / 2
                add("user_simulator", sims * seeds, sims * seeds, 250 + shown)
    if "audit" in c.run.stages:
        from .audit.plan import estimate as audit_estimate

        audit_estimate(ctx, add)
    if "eval" in c.run.stages:
        for name in c.eval.evaluators:
            cls = ctx.registry.find("evaluator", name)
            if cls is not None:
                cls.estimate(getattr(c.eval, cls.section_name(), None), c, add)


def rewrite_calls_per_turn(ctx: RunContext) -> int:
    """What the selected contrast strategy says it asks the contrast role per turn."""
    strategy = ctx.registry.find("contrast_strategy", ctx.config.synth.strategy)
    # not registered: synthesis will say so; the plan still prints
    return int(strategy.rewrite_calls_per_turn) if strategy is not None else 0


def synth_rounds(ctx: RunContext) -> int:
    """Rounds of a batch-mode synthesis: per turn the chosen answer (with the rewrite), the
    rejected answer once its rewrite is back, and the user's next turn (none after the last)."""
    per_turn = 3 if rewrite_calls_per_turn(ctx) else 2
    return per_turn * ctx.config.synth.turns - 1


def print_plan(ctx: RunContext) -> None:
    c = ctx.config
    click.echo(f"music run plan (dry run: nothing is called) -> {c.run.output_dir}")
    from .stages import STAGES

    for stage in c.run.stages:
        click.echo(f"  {STAGES[stage].plan(ctx)}")
    total, online_total = print_rows(ctx, _run_calls)
    if "synth" in c.run.stages:
        batched = sorted({n for r in ("user_simulator", "assistant_simulator", "contrast")
                          if c.models[n := (getattr(c.roles, r) or c.roles.assistant_simulator)].mode == "batch"})
        if batched:
            click.echo(f"\n  synthesis in batch mode ({', '.join(batched)}): a wavefront of {c.seeds.limit or 'all'} "
                       f"conversations in {synth_rounds(ctx)} rounds (T={c.synth.turns}; plus one per retried step "
                       f"on the slowest conversation's path); each round is one batch job "
                       f"per endpoint, split at the vendor's request limit; most jobs end within an hour (about "
                       f"{synth_rounds(ctx)} h in all at that pace), a job at most 24 h")
    print_cost(total, online_total)
    if c.run.preflight:
        from .preflight import print_findings

        print_findings(ctx)


def print_rows(ctx: RunContext, fill: Callable[[Any, Callable[..., None]], None]) -> tuple[float, float]:
    """The table of calls, tokens and prices per role; returns (as configured, all online) USD."""
    c = ctx.config
    rows = tally(ctx, fill)
    click.echo("\n  role                 endpoint                                 mode      calls    samples   prompt tok  "
               "completion tok  online USD   batch USD")
    total = online_total = 0.0
    fixed = ("user_simulator", "assistant_simulator", "contrast", "auditor", "policy", "judge")
    for role in fixed + tuple(sorted(r for r in rows if r not in fixed)):  # then judge:NAME (eval.judges)
        if role not in rows:
            continue
        r = rows[role]
        name = role_endpoint(c, role)
        ep = c.models[name]
        online = ep.cost_usd(r["prompt_tokens"], r["completion_tokens"])
        batch = ep.cost_usd(r["prompt_tokens"], r["completion_tokens"], batch=True)
        online_total += online
        total += batch if ep.mode == "batch" else online
        click.echo(f"  {role:20s} {name + ' (' + ep.provider + ':' + ep.model + ')':40s} {ep.mode:7s} {r['calls']:>8.0f} "
                   f"{r['samples']:>10.0f} {r['prompt_tokens']:>12.0f} {r['completion_tokens']:>15.0f} "
                   f"{online:>11.2f} {batch:>11.2f}")
    return total, online_total


def print_cost(total: float, online_total: float) -> None:
    click.echo(f"\n  estimated cost: ${total:.2f} as configured (every role online: ${online_total:.2f}; "
               f"set models.<name>.price_input_per_mtok / price_output_per_mtok, and mode: batch for the batch price)")
