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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from music_core import progress
from music_core.config import resolve_user_simulator
from music_core.contracts import EvalReport, Evaluator
from music_core.data import Conversation, Message
from music_core.evaluation import load_scorer
from music_core.jsonl import write_jsonl_atomic
from music_core.judging import judge_both_orders
from music_core.stats import summarize

from .plots import heatmap


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

    def run(self, reward_models: dict[str, str]) -> EvalReport:
        return asyncio.run(self._run(reward_models))

    def load_prompts(self) -> list[tuple[str, str, list[Message]]]:
        import random

        out = []
        from music_core.config.schema import PromptSetConfig

        sets = self.ctx.config.eval.bon.prompt_sets or {"builtin": PromptSetConfig()}
        for set_name, ps in sets.items():
            convs = self.ctx.component("seed_source", ps.source).load_conversations(ps)
            convs = sorted(convs, key=lambda c: c.id)
            random.Random(self.ctx.config.eval.bon.seed).shuffle(convs)
            kept = [(set_name, c.id, m) for c in convs if (m := prompt_messages(c))]
            out += kept[: ps.limit] if ps.limit else kept
        return out

    async def _run(self, reward_models: dict[str, str]) -> EvalReport:
        ctx, cfg = self.ctx, self.ctx.config.eval.bon
        prompts = self.load_prompts()
        scorers = {name: load_scorer(ctx, path) for name, path in reward_models.items()}
        locks = {name: threading.Lock() for name in scorers}
        policy, user_llm = ctx.role("policy"), ctx.role("user_simulator")
        user = ctx.component("simulator", resolve_user_simulator(ctx.config), ctx.config.synth.user_simulator_options)
        judge = ctx.component("judge", cfg.judge, cfg.judge_options)
        judge_llm = ctx.role("judge")
        ns = sorted(set(cfg.n))
        bigger = [n for n in ns if n > 1]
        sem = asyncio.Semaphore(max(1, cfg.concurrency))

        async def score(rm: str, convs: list[list[Message]]) -> list[float]:
            def work() -> list[float]:
                with locks[rm]:  # one forward at a time per model; the event loop stays free
                    return scorers[rm].score(convs)

            return await asyncio.to_thread(work)

        async def converse(set_name: str, pid: str, prompt: list[Message], rm: str | None, n: int) -> Dialogue:
            d = Dialogue(set_name, pid, rm, n, list(prompt))
            async with sem:
                for turn in range(cfg.turns):
                    greedy = n == 1 and cfg.greedy_baseline
                    comps = await policy.chat(d.messages, n=n, **({"temperature": 0.0} if greedy else {}))
                    cands = [c.text.strip() or "(empty)" for c in comps]
                    if n == 1:
                        best, scores = 0, []
                    else:
                        scores = await score(rm, [d.messages + [{"role": "assistant", "content": c}] for c in cands])
                        best = max(range(n), key=lambda i: scores[i])
                    d.messages.append({"role": "assistant", "content": cands[best]})
                    d.picks.append({"turn": turn + 1, "picked": best, "scores": [round(s, 4) for s in scores]})
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

        jobs = [(s, pid, p, None, 1) for s, pid, p in prompts]
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
        judged_calls = sum(1 for v in verdicts if v.judged)
        results = {"rows": rows, "prompts": len(prompts), "turns": cfg.turns, "n": ns,
                   "judge": {"name": cfg.judge, "comparisons": len(comparisons), "judged": judged_calls,
                             "identical_skipped": len(comparisons) - judged_calls,
                             "unparsed_verdicts": getattr(judge, "unparsed", None)},
                   "dialogues_path": str(out / "dialogues.jsonl"), "judgements_path": str(out / "judgements.jsonl"),
                   "usage": usage}
        return EvalReport(self.name, results, to_markdown(results, figure), [figure] if figure else [])


def to_markdown(r: dict[str, Any], figure: str | None) -> str:
    lines = ["## Multi-turn Best-of-N", "",
             f"{r['prompts']} prompts, {r['turns']} assistant turns, N in {r['n']}; judge `{r['judge']['name']}` in both "
             f"orders ({r['judge']['judged']} comparisons judged, {r['judge']['identical_skipped']} identical pairs "
             f"scored as ties without a call). Win rate counts a tie as half; 95% bootstrap intervals over prompts.", "",
             "| comparison | prompt set | N | win rate | 95% CI | W / T / L |", "|---|---|---|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| {row['comparison']} | {row['prompt_set']} | {row['n']} | {row['win_rate']:.3f} | "
                     f"[{row['ci95_low']:.3f}, {row['ci95_high']:.3f}] | {row['wins']} / {row['ties']} / {row['losses']} |")
    if figure:
        lines += ["", f"![win rates]({Path(figure).name})"]  # beside this report; the run report re-roots it
    return "\n".join(lines) + "\n"

