"""``pairwise-accuracy``: how often each RM scores chosen above rejected on held-out pairs,
overall, by source, by contrast strategy, and by the turn where the branches first differ."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from music_core import contamination, judge_scoring
from music_core.contracts import EvalReport, Evaluator, Problem, RewardModel
from music_core.data import PreferencePair
from music_core.errors import MusicError
from music_core.formats import load_pairs
from music_core.scoring import (
    items_seen,
    score_conversations,
    scoring_task,
    truncation,
    truncation_lines,
)
from music_core.stats import paired_table, say_paired, wilson

from .options import PairwiseEvalConfig


def first_divergent_turn(pair: PreferencePair) -> int:
    """1-based index of the assistant turn at or before which chosen and rejected first differ."""
    turn = 0
    for c, r in zip(pair.chosen, pair.rejected):
        if c["role"] == "assistant":
            turn += 1
        if c != r:
            return max(turn, 1) if c["role"] == "assistant" else turn + 1
    return turn


class PairwiseAccuracy(Evaluator):
    name = "pairwise-accuracy"
    command = "pairwise"
    description = "accuracy on held-out pairs, by source, contrast strategy and first divergent turn"
    config_class = PairwiseEvalConfig
    config_key = "pairwise"

    @classmethod
    def describe(cls, section: Any) -> str:
        return f"pairwise accuracy on {section.data or 'the mix eval split'}"

    @classmethod
    def preflight(cls, section: Any, ctx: Any) -> list[Problem]:
        from music_core.preflight import check_data  # null: the mix's eval split, made by the run

        return check_data(section.data, "eval.pairwise.data", columns=("chosen", "rejected")) if section.data else []

    @classmethod
    def estimate(cls, section: Any, cfg: Any, add: Any) -> None:
        """The LLM judges' calls (eval.judges): the data's pairs, or a guess at the mix's eval split."""
        guess = ((cfg.seeds.limit or 0) + (cfg.mix.original_count or 100)) * cfg.mix.eval_fraction
        judge_scoring.estimate(cfg, add, judge_scoring.local_records(section.data) or round(guess))

    @classmethod
    def headline(cls, result: dict[str, Any], rm: str) -> dict[str, dict[str, Any]]:
        """``held-out accuracy`` with its Wilson interval, paired on the pairs' ids."""
        model = (result.get("models") or {}).get(rm)
        if not model:
            return {}
        acc, n = model["accuracy"], result["pairs"]
        return {"held-out accuracy": {"value": acc, "ci95": wilson(round(acc * n), n), "group": "accuracy",
                                      "hits": (result.get("item_hits") or {}).get(rm)}}

    def run(self, reward_models: dict[str, RewardModel]) -> EvalReport:
        cfg = self.section
        path = cfg.data or str(self.ctx.mix_dir() / "eval.jsonl")
        if not Path(path).exists() and not cfg.data:
            raise MusicError(f"pairwise-accuracy: {path} not found (run `music mix`, or set eval.pairwise.data)")
        pairs = load_pairs(path)  # any preference file (HH transcripts too); unusable records are skipped, counted
        pairs, contaminated = contamination.screen(self.ctx, pairs, lambda p: contamination.prompt_text(p.chosen))
        results: dict[str, Any] = {"data": path, "pairs": len(pairs), "n_scored": len(pairs),
                                   "contamination": contaminated, "models": {}, "truncation": {}}
        all_hits: dict[str, list[int]] = {}
        convs = [p.chosen for p in pairs] + [p.rejected for p in pairs]
        task = scoring_task(self.name, len(convs), len(reward_models))
        for name, rm in reward_models.items():
            scored = score_conversations(rm.scorer(cfg.batch_size), convs, task)
            rc, rr = scored.rewards[:len(pairs)], scored.rewards[len(pairs):]
            groups: dict[str, dict[str, list[int]]] = {"source": defaultdict(list), "strategy": defaultdict(list),
                                                       "first_divergent_turn": defaultdict(list)}
            hits = []
            for p, c, r in zip(pairs, rc, rr):
                ok = 1 if c > r else 0
                hits.append(ok)
                groups["source"][p.source].append(ok)
                groups["strategy"][str(p.meta.get("strategy", "original"))].append(ok)
                groups["first_divergent_turn"][str(first_divergent_turn(p))].append(ok)
            all_hits[name] = hits
            results["models"][name] = {
                "accuracy": sum(hits) / len(hits) if hits else float("nan"),
                **{g: {k: {"accuracy": sum(v) / len(v), "n": len(v)} for k, v in sorted(d.items())} for g, d in groups.items()},
            }
            seen = items_seen(scored.seen, [(i, i + len(pairs)) for i in range(len(pairs))])
            results["truncation"][name] = truncation(seen, scored.limits, hits)
        task.close()
        results["paired"] = paired_table(all_hits)
        # per item, so that a sweep can pair two runs' RMs on the items they share
        results["item_hits"] = {name: dict(zip((p.id for p in pairs), h)) for name, h in all_hits.items()}
        results["judges"] = judge_scoring.beside(self.ctx, self.name, [(p.chosen, p.rejected) for p in pairs], all_hits,
                                                 ids=[p.id for p in pairs])
        return EvalReport(self.name, results, to_markdown(results))


def to_markdown(r: dict[str, Any]) -> str:
    lines = ["## Pairwise accuracy on held-out pairs", "",
             f"`{r['data']}`: {r['pairs']} pairs; {contamination.describe(r['contamination'])}.", "",
             "| reward model | overall | by source | by strategy | by first divergent turn |", "|---|---|---|---|---|"]
    fmt = lambda d: ", ".join(f"{k} {v['accuracy']:.2f} (n={v['n']})" for k, v in d.items())  # noqa: E731
    for name, m in r["models"].items():
        lines.append(f"| {name} | {m['accuracy']:.3f} | {fmt(m['source'])} | {fmt(m['strategy'])} | {fmt(m['first_divergent_turn'])} |")
    lines += paired_lines(r["paired"])
    lines += judge_scoring.markdown(r.get("judges"), "pairs")
    lines += truncation_lines(r.get("truncation", {}))
    return "\n".join(lines) + "\n"


def paired_lines(rows: list[dict[str, Any]], label: str = "") -> list[str]:
    """Each pair of RMs on the same items, in one sentence (difference, interval, McNemar)."""
    if not rows:
        return []
    return [""] + [f"- {label}{say_paired(p['a'], p['b'], p)}" for p in rows]
