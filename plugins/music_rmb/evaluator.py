"""``music eval rmb``: RMB (Zhou et al., ICLR 2025) scored as RMB scores it. Pairwise: a win is
strictly r(chosen) > r(reject), so a tie is a loss (RMB's ``eval/`` code). Best-of-N: an item
counts when r(bon_best) beats every loser strictly (the paper's rule). Accuracy per set with
bootstrap intervals, by goal (Helpfulness, Harmlessness), by category (the top two levels of
``category_path``) and by user turns; every pair of RMs compared on the same items; what each
RM could not see of the long conversations."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from music_core import contamination, judge_scoring
from music_core.contracts import EvalReport, Evaluator, RewardModel, Seen
from music_core.data import Message
from music_core.errors import ConfigError
from music_core.scoring import items_seen, score_conversations, scoring_task, truncation
from music_core.stats import accuracy, paired_table, turn_bucket

from .options import SETS, RMBConfig
from .report import headline, markdown
from .schema import SET_NAMES, TURN_BUCKETS, Item, read

LICENCE = "RMB ships no licence file; the data's terms are as its source says"
SOURCE = "github.com/Zhou-Zoey/RMB-Reward-Model-Benchmark (RMB_dataset/)"


class RMB(Evaluator):
    name = command = "rmb"
    description = "RMB: pairwise and Best-of-N accuracy by goal, category and user turns (RMB's own win rule)"
    config_class, config_key = RMBConfig, "rmb"

    @classmethod
    def describe(cls, section: Any) -> str:
        return f"rmb ({', '.join(section.sets)}) on {section.data or 'no data'}"

    @classmethod
    def skip_reason(cls, section: Any) -> str | None:
        return None if section.data else f"no data: set eval.rmb.data to RMB's RMB_dataset folder ({SOURCE})"

    @classmethod
    def estimate(cls, section: Any, cfg: Any, add: Any) -> None:
        """The LLM judges' calls (eval.judges), on the pairwise set only (a guess of 3,000 items
        when eval.rmb.limit does not say)."""
        if section.data and "pairwise" in section.sets:
            judge_scoring.estimate(cfg, add, section.limit or 3000, conversation_tokens=600)

    @classmethod
    def check_config(cls, section: Any, cfg: Any) -> None:
        unknown = [s for s in section.sets if s not in SETS]
        if unknown or not section.sets:
            raise ConfigError(f"config key 'eval.rmb.sets': {unknown or 'empty'}; choose from {list(SETS)}")
        if section.limit is not None and section.limit < 1:
            raise ConfigError("config key 'eval.rmb.limit': must be at least 1 when set")
        if section.batch_size < 1 or section.bootstrap < 0:
            raise ConfigError("config key 'eval.rmb.batch_size' must be at least 1 and 'eval.rmb.bootstrap' at least 0")

    def run(self, reward_models: dict[str, RewardModel]) -> EvalReport:
        cfg = self.section
        items, left_out, files = read(cfg)
        items, contaminated = contamination.screen(self.ctx, items,
                                                   lambda it: contamination.prompt_text(it.conversations[0]))
        if contaminated["excluded"]:
            left_out["contaminated (eval.contamination.exclude)"] = contaminated["excluded"]
        hits, seen = self.score(items, reward_models)
        sets = [s for s in SETS if s in cfg.sets]
        results: dict[str, Any] = {
            "benchmark": "RMB", "source": SOURCE, "data": cfg.data, "sets": sets, "files": len(files),
            "licence": LICENCE, "items": {s: sum(it.set == s for it in items) for s in sets}, "n_scored": len(items),
            "left_out": left_out, "contamination": contaminated, "models": {}, "truncation": {}}
        for name, h in hits.items():
            results["models"][name] = {
                "accuracy": accuracy(h, cfg.bootstrap, cfg.seed),  # both sets pooled, as item_hits pairs them
                "sets": {s: self.figures([it for it in items if it.set == s],
                                         [x for it, x in zip(items, h) if it.set == s]) for s in sets}}
            results["truncation"][name] = truncation(seen[name][0], seen[name][1], h)
        results["paired"] = {s: paired_table({n: [x for it, x in zip(items, h) if it.set == s] for n, h in hits.items()},
                                             cfg.bootstrap, cfg.seed) for s in sets}
        results["item_hits"] = {name: {it.uid: x for it, x in zip(items, h)} for name, h in hits.items()}
        pw = [k for k, it in enumerate(items) if it.set == "pairwise"]  # a judge compares two conversations
        results["judges"] = judge_scoring.beside(
            self.ctx, self.name, [(items[k].conversations[0], items[k].conversations[1]) for k in pw],
            {n: [h[k] for k in pw] for n, h in hits.items()}, bootstrap=cfg.bootstrap, seed=cfg.seed,
            ids=[items[k].uid for k in pw])
        results["headline"] = headline(self.name, results)
        return EvalReport(self.name, results, markdown(results))

    def score(self, items: list[Item], reward_models: dict[str, RewardModel]
              ) -> tuple[dict[str, list[int]], dict[str, tuple[list[Seen] | None, dict[str, Any]]]]:
        """Per RM, a hit per item (the preferred conversation strictly above every other), each
        distinct conversation scored once; and what the RM saw of each item."""
        unique: dict[str, list[Message]] = {}
        keys = [[json.dumps(c, ensure_ascii=False) for c in it.conversations] for it in items]
        for it, ks in zip(items, keys):
            for k, c in zip(ks, it.conversations):
                unique.setdefault(k, c)
        position = {k: i for i, k in enumerate(unique)}
        groups = [[position[k] for k in ks] for ks in keys]
        hits: dict[str, list[int]] = {}
        seen: dict[str, tuple[list[Seen] | None, dict[str, Any]]] = {}
        task = scoring_task(self.name, len(unique), len(reward_models))
        for name, rm in reward_models.items():
            scored = score_conversations(rm.scorer(self.section.batch_size), list(unique.values()), task)
            r = scored.rewards
            hits[name] = [int(all(r[g[0]] > r[j] for j in g[1:])) for g in groups]
            seen[name] = (items_seen(scored.seen, groups), scored.limits)
        task.close()
        return hits, seen

    def figures(self, items: list[Item], hits: list[int]) -> dict[str, Any]:
        cfg = self.section
        groups: dict[str, dict[str, list[int]]] = {"by_goal": defaultdict(list), "by_category": defaultdict(list),
                                                   "by_turns": defaultdict(list)}
        for it, h in zip(items, hits):
            groups["by_goal"][it.goal].append(h)
            groups["by_category"][it.group].append(h)
            groups["by_turns"][turn_bucket(it.user_turns)].append(h)
        order = {"by_turns": [b for b in TURN_BUCKETS if groups["by_turns"][b]]}
        return {"name": SET_NAMES[items[0].set] if items else "", "accuracy": accuracy(hits, cfg.bootstrap, cfg.seed),
                **{g: {k: accuracy(d[k], cfg.bootstrap, cfg.seed) for k in order.get(g, sorted(d))}
                   for g, d in groups.items()}}
