"""What an audit will cost, calling nothing: the auditor's calls, tokens and price for the
``--dry-run`` plan of ``music audit`` and ``music run``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config.load import role_endpoint

if TYPE_CHECKING:
    from ..context import RunContext


def expected_work(ctx: RunContext) -> tuple[int, int, int, str]:
    """(pairs, contrasted turns, known pairs, how the pairs were counted). The pairs are counted
    from the file when it exists (an audit after synthesis), else from the seeds synthesis will
    roll out, each with every turn contrasted."""
    c = ctx.config
    a = c.audit
    files: list[str] = [a.pairs] if a.pairs else [str(ctx.paths.synth_output)]
    if all(Path(f).is_file() for f in files):
        from .runner import load_audit_pairs
        from .verdicts import contrasted_turns

        found = load_audit_pairs(ctx)[0]
        turns = sum(len(contrasted_turns(p)) for p in found) if a.turn_judge else 0
        return len(found), turns, known_count(ctx), f"counted in {', '.join(files)}"
    n = c.seeds.limit or 0
    pairs = n if a.limit is None else min(n, a.limit)
    per_pair = max(0, c.synth.turns - c.synth.contrast_from_turn + 1) if a.turn_judge else 0
    return pairs, pairs * per_pair, known_count(ctx), f"at most one per seed ({n} seeds), every turn contrasted"


def known_count(ctx: RunContext) -> int:
    """Known pairs the calibration will judge: counted in a local known-answer file, else the
    sample size (the original data is not read for a plan: it may sit on a hub)."""
    a = ctx.config.audit
    if a.known_pairs and Path(a.known_pairs).is_file():
        from .runner import load_known_pairs

        return len(load_known_pairs(ctx)[0])
    return 0 if (a.pairs and not a.known_pairs) or a.calibration_pairs == 0 else a.calibration_pairs


def estimate(ctx: RunContext, add: Any) -> None:
    """Both orders of every verdict: whole conversations, contrasted turns, known pairs."""
    c = ctx.config
    pairs, turns, known, _ = expected_work(ctx)
    turn_tok = 0.7 * c.models[role_endpoint(c, "assistant_simulator")].max_tokens + 40  # one exchange
    conversation = 150 + c.synth.turns * 2 * turn_tok
    add("auditor", 2 * (pairs + known), 2 * (pairs + known), 300 + 2 * conversation)
    add("auditor", 2 * turns, 2 * turns, 300 + conversation)  # a turn's histories: half a conversation each, on average


def describe(ctx: RunContext) -> str:
    c = ctx.config
    pairs, turns, known, counted = expected_work(ctx)
    a = c.audit
    name = role_endpoint(c, "auditor")
    ep = c.models[name]
    cal = f"{known} known pairs" if known else "no calibration"
    return (f"audit: {pairs} pairs ({counted}) and {turns} contrasted turns judged in both orders by the auditor "
            f"{name} ({ep.provider}:{ep.model}, judges {a.judge}/{a.turn_judge or '-'}), {cal}; "
            f"{2 * (pairs + turns + known)} calls")
