"""``music eval depth``: where in a conversation can each reward model see a defect?

Every pair differs in one assistant answer, ``d`` answers from the end. Accuracy by ``d`` per RM
with 95% bootstrap intervals, by defect kind and by number of turns; every pair of RMs compared
at each depth (paired bootstrap, exact McNemar); pairs whose defect truncation cut away counted
as not visible and reported apart.

A tie, r(chosen) == r(rejected), is half right (0.5), so an RM that cannot see the defect sits at
exactly 0.5: an RM that reads only the last turn scores every pair at ``d >= 1`` as a tie.

Not visible: the scorer said the whole first exchange was cut away (``Seen.first_turn_cut``,
on either side) and the defect is in that first exchange (``d = num_turns - 1``). The scorer
does not say how many exchanges it dropped, so this is a lower bound; the truncation lines
give accuracy on pairs seen whole and cut.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from music_core import contamination, judge_scoring
from music_core.contracts import EvalReport, Evaluator, RewardModel, Seen
from music_core.data import Conversation, Message, PreferencePair
from music_core.errors import ConfigError, MusicError
from music_core.scoring import items_seen, score_conversations, scoring_task, truncation
from music_core.stats import accuracy, paired_table, turn_bucket, turn_buckets

from .benchfile import read_conversations, read_depth_pairs, write_benchmark
from .build import KINDS, build_pairs, parse_depths, parse_kinds
from .options import DepthConfig
from .plots import depth_curve
from .report import headline, markdown

TURN_BUCKETS = turn_buckets()


def hit(chosen: float, rejected: float) -> float:
    """Right 1, wrong 0, a tie half right."""
    return 1.0 if chosen > rejected else 0.5 if chosen == rejected else 0.0


class Depth(Evaluator):
    name = command = "depth"
    description = "accuracy by the depth of a one-answer defect (d = 0 the last answer): can the RM see earlier turns?"
    config_class, config_key = DepthConfig, "depth"
    data_keys = ("data", "conversations")

    @classmethod
    def describe(cls, section: Any) -> str:
        if section.data:
            return f"depth on {section.data}"
        source = section.conversations or "the held-out pairs' chosen sides"
        cap = f", at most {section.limit} conversations" if section.limit else ""
        return (f"depth on pairs built from {source} (d = {', '.join(map(str, section.depths))}; "
                f"{', '.join(section.kinds)}{cap}; rule-based, no LLM call)")

    @classmethod
    def check_config(cls, section: Any, cfg: Any) -> None:
        if section.data and section.conversations:
            raise ConfigError("config keys 'eval.depth.data' and 'eval.depth.conversations': set one (a built "
                              "benchmark, or conversations to build it from), not both")
        for key, parse in (("depths", parse_depths), ("kinds", parse_kinds)):
            try:
                parse(getattr(section, key))
            except ValueError as exc:
                raise ConfigError(f"config key 'eval.depth.{key}': {exc}") from None
        if section.limit is not None and section.limit < 1:
            raise ConfigError("config key 'eval.depth.limit': must be at least 1, or null for every conversation")
        if section.batch_size < 1 or section.bootstrap < 0:
            raise ConfigError("config key 'eval.depth.batch_size' must be at least 1 and 'eval.depth.bootstrap' at "
                              "least 0")

    @classmethod
    def headline(cls, result: dict[str, Any], rm: str) -> dict[str, dict[str, Any]]:
        """Accuracy at ``d = 0`` (the last answer) and at ``d >= 1`` (an earlier one), with their
        intervals, each paired on its own pairs."""
        model = (result.get("models") or {}).get(rm)
        if not model:
            return {}
        hits = (result.get("item_hits") or {}).get(rm) or {}
        depths = result.get("item_depths") or {}
        out: dict[str, dict[str, Any]] = {}
        for label, acc, keep in (("d = 0", (model.get("by_depth") or {}).get("0"), lambda d: d == 0),
                                 ("d >= 1", model.get("d>=1"), lambda d: d >= 1)):
            if acc and acc.get("n"):
                out[f"depth accuracy {label}"] = {
                    "value": acc["accuracy"], "ci95": acc["ci95"], "group": "depth",
                    "hits": {i: h for i, h in hits.items() if i in depths and keep(depths[i])} or None}
        return out

    def load(self) -> tuple[list[PreferencePair], dict[str, Any]]:
        """The pairs, from the benchmark file or built first (and written beside the report)."""
        cfg = self.section
        if cfg.data:
            return read_depth_pairs(cfg.data), {"data": cfg.data, "built": None}
        depths, kinds = parse_depths(cfg.depths), parse_kinds(cfg.kinds)
        source = cfg.conversations or str(self.ctx.paths.mix_file("eval"))
        if not cfg.conversations and not Path(source).exists():
            raise MusicError(f"depth: {source} not found (the run's held-out pairs: run `music mix`, or set "
                             f"eval.depth.data or eval.depth.conversations)")
        convs, read = read_conversations(source)
        convs, sampled = sample(convs, cfg.limit, cfg.seed)
        built = build_pairs(convs, depths, kinds, cfg.seed)
        out = self.ctx.paths.eval_dir(self.name) / "pairs.jsonl"
        command = (f"music eval depth eval.depth.conversations={source} eval.depth.depths=[{','.join(map(str, depths))}] "
                   f"eval.depth.kinds=[{','.join(kinds)}] eval.depth.limit={cfg.limit or 'null'} eval.depth.seed={cfg.seed}")
        path, card = write_benchmark(built, out, source=source, read=read, depths=depths, kinds=kinds,
                                     seed=cfg.seed, command=command)
        return built.pairs, {"data": str(path), "built": {"from": source, "held_out": not cfg.conversations,
                                                          "card": str(card), "depths": depths, "kinds": kinds,
                                                          "seed": cfg.seed, "sampled": sampled}}

    def run(self, reward_models: dict[str, RewardModel]) -> EvalReport:
        cfg = self.section
        pairs, source = self.load()
        pairs, contaminated = contamination.screen(self.ctx, pairs, lambda p: contamination.prompt_text(p.chosen))
        if not pairs and source["built"] and source["built"]["held_out"]:  # on by default: say so, never fail the run
            return EvalReport(self.name, {**source, "pairs": 0, "n_scored": 0, "depths": [], "kinds": [], "models": {},
                                          "paired": {}, "contamination": contaminated, "headline": []},
                              f"## Where can the reward model see a defect? (depth)\n\nNo pair to score: the held-out "
                              f"pairs (`{source['built']['from']}`) have no answer at the depths asked for, or every "
                              f"pair was excluded as contaminated.\n")
        if not pairs:
            raise MusicError(f"depth: no pairs to score from {source['data']} (no conversation has an answer at the "
                             f"depths asked for, or every pair was excluded as contaminated)")
        hits, visible, seen = self.score(pairs, reward_models)
        depths = sorted({p.meta["depth"] for p in pairs})
        results: dict[str, Any] = {**source, "pairs": len(pairs), "n_scored": len(pairs), "depths": depths,
                                   "kinds": _kinds_in(pairs),
                                   "tie_rule": "a tie is half right, so an RM that cannot see the defect sits at "
                                               "exactly 0.5", "contamination": contaminated, "models": {},
                                   "truncation": {}}
        for name, h in hits.items():
            results["models"][name] = self.figures(pairs, h, visible[name])
            per_pair, limits = seen[name]
            results["truncation"][name] = truncation(per_pair, limits, h)
        results["paired"] = {str(d): paired_table({n: [x for p, x in zip(pairs, h) if p.meta["depth"] == d]
                                                   for n, h in hits.items()}, cfg.bootstrap, cfg.seed) for d in depths}
        results["paired"]["d>=1"] = paired_table({n: [x for p, x in zip(pairs, h) if p.meta["depth"] >= 1]
                                                  for n, h in hits.items()}, cfg.bootstrap, cfg.seed)
        results["item_hits"] = {name: {p.id: x for p, x in zip(pairs, h)} for name, h in hits.items()}
        results["item_depths"] = {p.id: p.meta["depth"] for p in pairs}  # so a sweep pairs each depth's own pairs
        results["judges"] = self.judges(pairs, hits)
        results["headline"] = headline(self.name, results)
        figure = depth_curve(results, self.ctx.paths.eval_dir(self.name) / "depth_curve.png")
        results["figure"] = figure
        return EvalReport(self.name, results, markdown(results), [figure] if figure else [])

    def score(self, pairs: list[PreferencePair], reward_models: dict[str, RewardModel]
              ) -> tuple[dict[str, list[float]], dict[str, list[bool]], dict[str, tuple[list[Seen] | None, dict[str, Any]]]]:
        """Per RM: the hit of each pair (1, 0.5 or 0), whether its defect was visible, and what
        it saw; each distinct conversation is scored once (the chosen side recurs)."""
        unique: dict[str, list[Message]] = {}
        for p in pairs:
            for conv in (p.chosen, p.rejected):
                unique.setdefault(json.dumps(conv, ensure_ascii=False), conv)
        index = {k: i for i, k in enumerate(unique)}
        idx = [(index[json.dumps(p.chosen, ensure_ascii=False)], index[json.dumps(p.rejected, ensure_ascii=False)])
               for p in pairs]
        hits: dict[str, list[float]] = {}
        visible: dict[str, list[bool]] = {}
        seen: dict[str, tuple[list[Seen] | None, dict[str, Any]]] = {}
        task = scoring_task(self.name, len(unique), len(reward_models))
        for name, rm in reward_models.items():
            scored = score_conversations(rm.scorer(self.section.batch_size), list(unique.values()), task)
            hits[name] = [hit(scored.rewards[c], scored.rewards[r]) for c, r in idx]
            per_pair = items_seen(scored.seen, idx)
            in_first = [p.meta["depth"] == p.meta["num_turns"] - 1 for p in pairs]
            visible[name] = ([True] * len(pairs) if per_pair is None else
                             [not (s.first_turn_cut and first) for s, first in zip(per_pair, in_first)])
            seen[name] = (per_pair, scored.limits)
        task.close()
        return hits, visible, seen

    def judges(self, pairs: list[PreferencePair], hits: dict[str, list[float]]) -> dict[str, Any] | None:
        """The LLM judges (eval.judges) on the same pairs, with their accuracy by depth, kind and
        turns (a judge reads the whole conversation: no truncation, every pair visible)."""
        cfg = self.section
        block = judge_scoring.beside(self.ctx, self.name, [(p.chosen, p.rejected) for p in pairs], hits,
                                     bootstrap=cfg.bootstrap, seed=cfg.seed, ids=[p.id for p in pairs])
        for j in (block or {}).get("judges", {}).values():
            judged = [(p, h) for p, h in zip(pairs, j["hits"]) if h is not None]
            j["figures"] = self.figures([p for p, _ in judged], [h for _, h in judged], [True] * len(judged))
        return block

    @classmethod
    def estimate(cls, section: Any, cfg: Any, add: Any) -> None:
        """The LLM judges' calls (eval.judges): a pair per conversation, depth and kind (a guess
        of 100 conversations when eval.depth.limit does not say)."""
        items = judge_scoring.local_records(section.data) or \
            (getattr(section, "limit", None) or 100) * len(section.depths) * len(section.kinds)
        judge_scoring.estimate(cfg, add, items, conversation_tokens=600)

    def figures(self, pairs: list[PreferencePair], hits: list[float], visible: list[bool]) -> dict[str, Any]:
        cfg = self.section
        acc = lambda xs: accuracy(xs, cfg.bootstrap, cfg.seed)  # noqa: E731
        groups: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for p, h, v in zip(pairs, hits, visible):
            d, kind = p.meta["depth"], p.meta["defect"]
            groups["by_depth"][str(d)].append(h)
            groups["by_kind"][kind].append(h)
            groups["by_depth_kind"][f"{d}/{kind}"].append(h)
            groups["by_turns"][turn_bucket(p.meta["num_turns"])].append(h)
            if v:
                groups["by_depth_visible"][str(d)].append(h)
            if d >= 1:
                groups["d>=1"]["all"].append(h)
                if v:
                    groups["d>=1"]["visible"].append(h)
        out: dict[str, Any] = {"all": acc(hits), "d>=1": acc(groups["d>=1"]["all"]),
                               "d>=1_visible": acc(groups["d>=1"]["visible"]),
                               "ties": sum(h == 0.5 for h in hits), "not_visible": len(hits) - sum(visible)}
        for group in ("by_depth", "by_depth_visible", "by_kind", "by_depth_kind"):
            out[group] = {k: acc(v) for k, v in sorted(groups[group].items(), key=lambda kv: _order(kv[0]))}
        out["by_turns"] = {b: acc(groups["by_turns"][b]) for b in TURN_BUCKETS if groups["by_turns"][b]}
        return out


def sample(convs: list[Conversation], limit: int | None, seed: int) -> tuple[list[Conversation], dict[str, Any]]:
    """At most ``limit`` conversations, a seeded sample kept in file order; and what was kept of how many."""
    if limit is None or len(convs) <= limit:
        return convs, {"conversations": len(convs), "used": len(convs), "limit": limit}
    keep = sorted(random.Random(f"{seed}|limit").sample(range(len(convs)), limit))
    return [convs[i] for i in keep], {"conversations": len(convs), "used": limit, "limit": limit}


def _kinds_in(pairs: list[PreferencePair]) -> list[str]:
    present = {str(p.meta["defect"]) for p in pairs}
    return [k for k in KINDS if k in present] + sorted(present - set(KINDS))


def _order(key: str) -> tuple[int, str]:
    head = key.split("/", 1)[0]
    return (int(head), key) if head.isdigit() else (-1, key)

