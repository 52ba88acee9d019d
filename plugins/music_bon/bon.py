"""``best-of-n``: multi-turn Best-of-N with a pairwise judge.

For every prompt a user simulator and the policy talk for H turns; at each assistant turn the
policy samples N candidates and the reward model keeps the highest-scoring one (N=1 is the
single-sample baseline, greedy if ``greedy_baseline``). Reward models are compared fairly: the
same user simulator, and sample i of a turn comes from the cache whenever two runs reach the
same history, so N=2 sees the first two of N=4's candidates and RMs that agree share turns.
The judge compares whole conversations in both orders; results are win rates with ties as
half, with bootstrap 95% intervals: BoN vs N=1 for each RM, and RM vs RM at each N.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from music_core import progress
from music_core.config import resolve_user_simulator
from music_core.contracts import EvalReport, Evaluator, RewardModel, Seen
from music_core.data import Conversation, Message
from music_core.errors import ConfigError
from music_core.jsonl import write_jsonl_atomic
from music_core.judging import JudgedPair, judge_both_orders
from music_core.scoring import items_seen, truncation, truncation_lines

from .options import BonConfig, PromptSetConfig
from .plots import heatmap
from .stats import summarize

# Sample indices for candidates drawn again because they repeated an earlier one of their pool:
# far above any N, so that they never coincide with a pool's own samples.
REPEAT_BASE = 10_000
MAX_RESAMPLES = 4


@dataclass
class Dialogue:
    prompt_set: str
    prompt_id: str
    rm: str | None
    n: int
    messages: list[Message]
    picks: list[dict[str, Any]] = field(default_factory=list)
    stop: str = "turns"


def prompt_messages(conv: Conversation) -> list[Message] | None:
    """The conversation up to its last user turn (the policy answers next)."""
    msgs = list(conv.messages)
    while msgs and msgs[-1]["role"] == "assistant":
        msgs.pop()
    return msgs if msgs and msgs[-1]["role"] == "user" else None


class BestOfN(Evaluator):
    name = "best-of-n"
    command = "bon"
    description = "multi-turn Best-of-N win rates judged pairwise (BoN vs N=1, RM vs RM)"
    config_class = BonConfig
    config_key = "bon"

    @classmethod
    def check_config(cls, section: Any, cfg: Any) -> None:
        if not section.n or any(n < 1 for n in section.n):
            raise ConfigError("config key 'eval.bon.n': must be a non-empty list of N >= 1")
        if section.turns < 1:
            raise ConfigError("config key 'eval.bon.turns': must be at least 1")

    @classmethod
    def preflight(cls, section: Any, ctx: Any) -> list[Any]:
        """Each prompt set's source is registered, gives conversations, and its data resolves."""
        from music_core.preflight import check_source

        return [p for name, ps in section.prompt_sets.items()
                for p in check_source(ctx, ps, f"eval.bon.prompt_sets.{name}", "conversations")]

    @classmethod
    def describe(cls, section: Any) -> str:
        return (f"Best-of-N on {', '.join(section.prompt_sets) or 'builtin'} (H={section.turns}, N in {list(section.n)}, "
                f"judge {section.judge})")

    @classmethod
    def estimate(cls, section: Any, cfg: Any, add: Any) -> None:
        """Policy samples, user turns and judge calls of one run (both orders, all comparisons)."""
        b = section
        prompts = sum(ps.limit or 0 for ps in (b.prompt_sets or {"builtin": PromptSetConfig()}).values())
        rms = max(2, len(cfg.eval.reward_models))
        bigger = [n for n in b.n if n > 1]
        dialogues = prompts * (1 + rms * len(bigger))
        policy = cfg.models[cfg.roles.policy or cfg.roles.assistant_simulator]
        turn_tok = 0.7 * policy.max_tokens + 40
        for t in range(1, b.turns + 1):
            ctx_tok = 60 + (t - 1) * 2 * turn_tok
            samples = prompts * (1 + rms * sum(bigger))
            add("policy", dialogues, samples, ctx_tok)
            if t < b.turns:
                add("user_simulator", dialogues, dialogues, 250 + ctx_tok)
        comparisons = prompts * len(bigger) * (rms + rms * (rms - 1) / 2)
        add("judge", 2 * comparisons, 2 * comparisons, 300 + 2 * (60 + b.turns * 2 * turn_tok))

    @classmethod
    def headline(cls, result: dict[str, Any], rm: str) -> dict[str, dict[str, Any]]:
        """The RM's Best-of-N win rate against N=1, per N and prompt set, with its interval."""
        return {f"BoN win rate N={row['n']} ({row['prompt_set']})": {
                    "value": row["win_rate"], "ci95": (row["ci95_low"], row["ci95_high"]), "group": "Best-of-N"}
                for row in result.get("rows", []) if row["comparison"] == f"{rm} BoN vs N=1"}

    def run(self, reward_models: dict[str, RewardModel]) -> EvalReport:
        return asyncio.run(self._run(reward_models))

    def load_prompts(self) -> list[tuple[str, str, list[Message]]]:
        import random

        out = []
        sets = self.section.prompt_sets or {"builtin": PromptSetConfig()}
        for set_name, ps in sets.items():
            source = self.ctx.component("seed_source", ps.source)
            convs = source.require("conversations", f"eval.bon.prompt_sets.{set_name}.source").load_conversations(ps)
            convs = sorted(convs, key=lambda c: c.id)
            random.Random(self.section.seed).shuffle(convs)
            kept = [(set_name, c.id, m) for c in convs if (m := prompt_messages(c))]
            out += kept[: ps.limit] if ps.limit else kept
        return out

    async def _run(self, reward_models: dict[str, RewardModel]) -> EvalReport:
        ctx, cfg = self.ctx, self.section
        prompts = self.load_prompts()
        scorers = {name: rm.scorer() for name, rm in reward_models.items()}
        locks = {name: threading.Lock() for name in scorers}
        policy, user_llm = ctx.role("policy"), ctx.role("user_simulator")
        user = ctx.component("simulator", resolve_user_simulator(ctx.config), ctx.config.synth.user_simulator_options)
        judge = ctx.component("judge", cfg.judge, cfg.judge_options)
        judge_llm = ctx.role("judge")
        ns = sorted(set(cfg.n))
        bigger = [n for n in ns if n > 1]
        sem = asyncio.Semaphore(max(1, cfg.concurrency))

        seen: dict[str, list[Seen] | None] = {name: [] for name in scorers}  # per pool: what the RM saw

        async def score(rm: str, convs: list[list[Message]]) -> list[float]:
            def work() -> list[float]:
                with locks[rm]:  # one forward at a time per model; the event loop stays free
                    rewards, s = scorers[rm].score_seen(convs)
                    pools = seen[rm]
                    seen[rm] = None if s is None or pools is None else pools + (items_seen(s, [range(len(s))]) or [])
                    return rewards

            return await asyncio.to_thread(work)

        async def candidates(messages: list[Message], n: int) -> tuple[list[str], int, int]:
            """N candidates; a repeat of an earlier one in the pool is sampled again from sample
            indices no pool size uses (REPEAT_BASE + k), so the pools of different N still share
            their first samples. Returns the candidates, repeats drawn and repeats left."""
            greedy = n == 1 and cfg.greedy_baseline
            comps = await policy.chat(messages, n=n, temperature=0.0 if greedy else None)
            cands = [c.text.strip() or "(empty)" for c in comps]
            if n == 1 or not cfg.distinct_candidates:
                return cands, 0, n - len(set(cands))
            drawn, extra = 0, REPEAT_BASE
            for i in range(1, n):
                tries = 0
                drawn += cands[i] in cands[:i]
                while cands[i] in cands[:i] and tries < MAX_RESAMPLES:
                    cands[i] = (await policy.chat(messages, n=1, sample_index=extra))[0].text.strip() or "(empty)"
                    extra, tries = extra + 1, tries + 1
            return cands, drawn, n - len(set(cands))

        async def converse(set_name: str, pid: str, prompt: list[Message], rm: str | None, n: int) -> Dialogue:
            d = Dialogue(set_name, pid, rm, n, list(prompt))
            async with sem:
                for turn in range(cfg.turns):
                    cands, drawn, left = await candidates(d.messages, n)
                    if n == 1 or rm is None:
                        best, scores = 0, []
                    else:
                        scores = await score(rm, [d.messages + [{"role": "assistant", "content": c}] for c in cands])
                        best = max(range(n), key=lambda i: scores[i])
                    d.messages.append({"role": "assistant", "content": cands[best]})
                    d.picks.append({"turn": turn + 1, "picked": best, "scores": [round(s, 4) for s in scores],
                                    "repeats_resampled": drawn, "repeats_left": left, "candidates": cands})
                    if turn + 1 == cfg.turns:
                        break
                    try:
                        nxt = await user.next_turn(d.messages, user_llm)
                    except Exception as exc:  # the simulator gave up: the conversation ends here
                        d.stop = f"user_simulator_failed: {type(exc).__name__}"
                        break
                    if nxt.ended:
                        d.stop = "end_token"
                        break
                    d.messages.append({"role": "user", "content": nxt.text})
            task.advance(1)
            return d

        jobs: list[tuple[str, str, list[Message], str | None, int]] = [(s, pid, p, None, 1) for s, pid, p in prompts]
        jobs += [(s, pid, p, rm, n) for s, pid, p in prompts for rm in scorers for n in bigger]
        task = progress.Task("bon:dialogues", total=len(jobs), unit="dialogues", detail=self.ctx.llm.totals)
        dialogues = await asyncio.gather(*(converse(*j) for j in jobs))
        task.close()
        by_key = {(d.prompt_set, d.prompt_id, d.rm, d.n): d for d in dialogues}

        comparisons: list[tuple[str, str, int, str, Dialogue, Dialogue]] = []
        for s, pid, _ in prompts:
            base = by_key[(s, pid, None, 1)]
            for rm in scorers:
                for n in bigger:
                    comparisons.append((f"{rm} BoN vs N=1", s, n, pid, by_key[(s, pid, rm, n)], base))
            for a, b in itertools.combinations(sorted(scorers), 2):
                for n in bigger:
                    comparisons.append((f"{a} vs {b}", s, n, pid, by_key[(s, pid, a, n)], by_key[(s, pid, b, n)]))
        jtask = progress.Task("bon:judge", total=len(comparisons), unit="comparisons", detail=self.ctx.llm.totals)

        async def judged(c):
            async with sem:
                res = await judge_both_orders(judge, c[4].messages, c[5].messages, judge_llm, len(prompts[0][2]))
            jtask.advance(1)
            return res

        verdicts = await asyncio.gather(*(judged(c) for c in comparisons))
        jtask.close()
        usage = ctx.llm.usage_report()
        await ctx.aclose()
        outcome_word = {"a": "win", "b": "loss", "tie": "tie"}
        grouped: dict[tuple[str, str, int], list[str]] = {}
        for c, v in zip(comparisons, verdicts):
            grouped.setdefault((c[0], c[1], c[2]), []).append(outcome_word[v.outcome])
        rows = [{"comparison": k[0], "prompt_set": k[1], "n": k[2], **summarize(o, cfg.bootstrap, cfg.seed)}
                for k, o in sorted(grouped.items())]
        out = ctx.eval_dir() / self.name
        write_jsonl_atomic(out / "dialogues.jsonl", (d.__dict__ for d in dialogues))
        write_jsonl_atomic(out / "judgements.jsonl", ({"comparison": c[0], "prompt_set": c[1], "n": c[2], "prompt_id": c[3],
                                                       **v.to_dict()} for c, v in zip(comparisons, verdicts)))
        figure = heatmap(rows, out / "winrate_heatmap.png")
        results = {"rows": rows, "prompts": len(prompts), "turns": cfg.turns, "n": ns,
                   "judge": judge_stats(cfg.judge, verdicts), "candidates": candidate_stats(dialogues),
                   "dialogues_path": str(out / "dialogues.jsonl"), "judgements_path": str(out / "judgements.jsonl"),
                   "usage": usage, "n_scored": len(prompts),
                   "truncation": {rm: truncation(seen[rm], scorers[rm].limits()) for rm in scorers}}
        results["information"] = information(results)
        return EvalReport(self.name, results, to_markdown(results, figure), [figure] if figure else [])


def judge_stats(name: str, verdicts: list[JudgedPair]) -> dict[str, Any]:
    judged = [v for v in verdicts if v.judged]
    calls = 2 * len(judged)
    methods = Counter(x.method for v in judged for x in (v.first, v.second))
    both = [v.consistent for v in judged if v.consistent is not None]
    return {"name": name, "comparisons": len(verdicts), "judged": len(judged),
            "identical_skipped": len(verdicts) - len(judged), "calls": calls,
            "parsed": calls - methods.get("unparsed", 0), "unparsed_verdicts": methods.get("unparsed", 0),
            "parse_rate": round((calls - methods.get("unparsed", 0)) / calls, 4) if calls else None,
            "verdicts_by_method": dict(methods),
            "position_consistent": sum(both), "position_checked": len(both), "position_consistency": round(sum(both) / len(both), 4) if both else None}


def candidate_stats(dialogues: list[Dialogue]) -> dict[str, Any]:
    pools = [p for d in dialogues if d.n > 1 for p in d.picks]
    return {"pools": len(pools), "candidates": sum(len(p["scores"]) for p in pools),
            "pools_with_repeats_drawn": sum(p["repeats_resampled"] > 0 for p in pools),
            "repeats_resampled": sum(p["repeats_resampled"] for p in pools),
            "pools_with_repeats_left": sum(p["repeats_left"] > 0 for p in pools),
            "distinct_pool_share": round(sum(p["repeats_left"] == 0 for p in pools) / len(pools), 4) if pools else None}


def information(r: dict[str, Any]) -> dict[str, Any]:
    """Whether the table can tell anything apart, said plainly: reasons it carries no
    information, and warnings that weaken it."""
    rows, j, c = r["rows"], r["judge"], r["candidates"]
    none, weak = [], []
    if not j["judged"]:
        none.append("no comparison reached the judge: every pair of compared dialogues was identical")
    elif j["parse_rate"] is not None and j["parse_rate"] < 0.5:
        none.append(f"only {j['parse_rate']:.0%} of judge verdicts could be read")
    if rows and all(row["ties"] == row["prompts"] for row in rows):
        none.append("every comparison is a tie")
    elif rows and not any(row["ci95_low"] > 0.5 or row["ci95_high"] < 0.5 for row in rows):
        none.append(f"no win rate differs from 0.5 at 95% confidence ({r['prompts']} prompts)")
    if j["position_consistency"] is not None and j["position_consistency"] < 0.5:
        weak.append(f"the judge preferred the same dialogue in both orders in {j['position_consistency']:.0%} of "
                    "comparisons (a coin agrees 50%): its verdicts are mostly position bias")
    if j["comparisons"] and j["identical_skipped"] > j["comparisons"] / 2:
        weak.append(f"{j['identical_skipped']} of {j['comparisons']} compared dialogue pairs were identical")
    if c["pools_with_repeats_left"]:
        weak.append(f"{c['pools_with_repeats_left']} of {c['pools']} candidate pools still hold a repeated candidate")
    return {"carries_information": not none, "no_information_because": none, "warnings": weak}


def to_markdown(r: dict[str, Any], figure: str | None) -> str:
    j, c, info = r["judge"], r["candidates"], r["information"]
    rate = f"{j['parse_rate']:.1%}" if j["parse_rate"] is not None else "n/a"
    consistency = f"{j['position_consistency']:.1%}" if j["position_consistency"] is not None else "n/a"
    methods = ", ".join(f"{k} {v}" for k, v in sorted(j["verdicts_by_method"].items())) or "none"
    distinct = f"{c['distinct_pool_share']:.1%}" if c["distinct_pool_share"] is not None else "n/a"
    lines = ["## Multi-turn Best-of-N", "",
             f"{r['prompts']} prompts, {r['turns']} assistant turns, N in {r['n']}; judge `{j['name']}` in both "
             f"orders ({j['judged']} comparisons judged, {j['identical_skipped']} identical pairs "
             f"scored as ties without a call). Win rate counts a tie as half; 95% bootstrap intervals over prompts.", ""]
    if info["carries_information"]:
        lines += ["**This result can tell the compared systems apart** (at least one interval excludes 0.5).", ""]
    else:
        lines += [f"**This result carries no information:** {'; '.join(info['no_information_because'])}.", ""]
    lines += [f"- judge verdicts read: {j['parsed']} of {j['calls']} calls ({rate}; {methods})",
              f"- judge position consistency (same dialogue preferred in both orders): {j['position_consistent']} of "
              f"{j['position_checked']} ({consistency})",
              f"- candidate pools with distinct candidates: {distinct} of {c['pools']} "
              f"({c['repeats_resampled']} repeats drawn and sampled again, {c['pools_with_repeats_left']} pools with a repeat left)",
              f"- identical dialogue pairs compared: {j['identical_skipped']} of {j['comparisons']}"]
    lines += [f"- warning: {w}" for w in info["warnings"]]
    lines += ["", "| comparison | prompt set | N | win rate | 95% CI | W / T / L |", "|---|---|---|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| {row['comparison']} | {row['prompt_set']} | {row['n']} | {row['win_rate']:.3f} | "
                     f"[{row['ci95_low']:.3f}, {row['ci95_high']:.3f}] | {row['wins']} / {row['ties']} / {row['losses']} |")
    lines += truncation_lines(r.get("truncation", {}))  # an item here is one candidate pool
    if figure:
        lines += ["", f"![win rates]({Path(figure).name})"]  # beside this report; the run report re-roots it
    return "\n".join(lines) + "\n"

