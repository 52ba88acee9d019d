"""Reward models against human votes on multi-turn conversations: accuracy overall, by number of
user turns (1, 2, 3-4, 5+) and by language, with bootstrap intervals; ties reported apart from
errors; every pair of RMs compared on the same items (paired bootstrap, exact McNemar); items
that overlap the training prompts counted (and left out on request)."""

from __future__ import annotations

import json
import os
import random
from collections import defaultdict
from pathlib import Path
from typing import Any, ClassVar

from music_core import contamination, judge_scoring
from music_core.contracts import EvalReport, Evaluator, RewardModel, Seen
from music_core.data import Message
from music_core.errors import ConfigError
from music_core.scoring import (
    items_seen,
    score_conversations,
    scoring_task,
    truncation,
    truncation_lines,
)
from music_core.stats import accuracy, paired_table, say_paired, turn_bucket

from .schema import TURN_BUCKETS, Comparison, read


def unavailable(data: str | None, key: str) -> str | None:
    """Why this data cannot be read here, before anything runs (None: try it)."""
    if not data:
        return f"not available offline: pass a local path with eval.{key}.data"
    path = Path(os.path.expanduser(data))
    if path.exists() or data.startswith((".", "/", "~")) or path.suffix:
        return None  # a local path: reading it names any problem
    offline = any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    if offline and not _in_hub_cache(data):
        return f"{data} is not available offline: pass a local path with eval.{key}.data"
    return None


def licence_of(data: str | None, dataset: str, licence: str) -> str:
    """A dataset's licence is stated only when the data was read from its hub id; a local file's
    licence is whatever its source says."""
    return licence if data == dataset else "a local file: its licence is as its source says"


def _in_hub_cache(hub_id: str) -> bool:
    try:
        import datasets
        from huggingface_hub import constants
    except ImportError:
        return False
    owner_name = hub_id.replace("/", "___")
    return (Path(datasets.config.HF_DATASETS_CACHE) / owner_name).exists() or \
        (Path(constants.HF_HUB_CACHE) / f"datasets--{hub_id.replace('/', '--')}").exists()


class HumanPreferenceEvaluator(Evaluator):
    """One human-labelled dataset; subclasses name it, its columns and its row parser."""

    dataset: ClassVar[str] = ""
    licence: ClassVar[str] = ""
    required: ClassVar[tuple[str, ...]] = ()

    @staticmethod
    def parse(rec: dict[str, Any], i: int, section: Any, dropped: Any) -> Comparison | None:
        raise NotImplementedError

    @classmethod
    def describe(cls, section: Any) -> str:
        return f"{cls.name} ({cls.dataset}) on {section.data or 'no data'} ({section.split})"

    @classmethod
    def skip_reason(cls, section: Any) -> str | None:
        return unavailable(section.data, cls.section_name())

    @classmethod
    def preflight(cls, section: Any, ctx: Any) -> list[Any]:
        """The data resolves, with the dataset's required columns in its first rows."""
        from music_core.preflight import check_data

        return check_data(section.data, f"eval.{cls.section_name()}.data", split=section.split, name=section.name,
                          columns=cls.required) if section.data else []

    @classmethod
    def estimate(cls, section: Any, cfg: Any, add: Any) -> None:
        """The LLM judges' calls (eval.judges): one per decided item and order (a guess of 1000
        items when neither eval.<section>.limit nor a local JSONL file says how many)."""
        if section.data:
            items = section.limit or judge_scoring.local_records(section.data) or 1000
            judge_scoring.estimate(cfg, add, items, conversation_tokens=600)

    @classmethod
    def check_config(cls, section: Any, cfg: Any) -> None:
        if section.tie_margin < 0:
            raise ConfigError(f"config key 'eval.{cls.section_name()}.tie_margin': must be >= 0")
        if section.limit is not None and section.limit < 1:
            raise ConfigError(f"config key 'eval.{cls.section_name()}.limit': must be at least 1 when set")

    def load(self) -> tuple[list[Comparison], dict[str, int], int]:
        cfg = self.section
        if not cfg.data:
            raise ConfigError(f"config key 'eval.{self.section_name()}.data': no data given (a hub id, e.g. "
                              f"{self.dataset}, or a local path)")
        items, dropped, rows = read(cfg, self.required, self.parse)
        if cfg.limit is not None and cfg.limit < len(items):
            keep = set(random.Random(cfg.seed).sample(range(len(items)), cfg.limit))
            dropped[f"past eval.{self.section_name()}.limit"] += len(items) - cfg.limit
            items = [it for i, it in enumerate(items) if i in keep]
        return items, dict(dropped), rows

    def run(self, reward_models: dict[str, RewardModel]) -> EvalReport:
        cfg = self.section
        items, dropped, rows = self.load()
        items, contaminated = contamination.screen(self.ctx, items, lambda c: contamination.prompt_text(c.a))
        if contaminated["excluded"]:
            dropped["contaminated (eval.contamination.exclude)"] = contaminated["excluded"]
        diffs = self.score(items, reward_models)
        results: dict[str, Any] = {"dataset": self.dataset, "data": cfg.data, "split": cfg.split, "rows": rows,
                                   "items": len(items), "n_scored": len(items), "dropped": dropped,
                                   "contamination": contaminated, "tie_margin": cfg.tie_margin,
                                   "licence": licence_of(cfg.data, self.dataset, self.licence), "models": {},
                                   "truncation": {}}
        decided = [i for i, it in enumerate(items) if it.winner != "tie"]
        hits: dict[str, list[int]] = {}
        for name, d in diffs.items():
            hits[name] = [int((d[i] > 0) if items[i].winner == "a" else (d[i] < 0)) for i in decided]
            results["models"][name] = self.model_figures(items, decided, hits[name], d)
            per_item: list[int | None] = [None] * len(items)
            for k, i in enumerate(decided):
                per_item[i] = hits[name][k]
            results["truncation"][name] = truncation(*self.seen[name], per_item)
        results["paired"] = paired_table(hits, cfg.bootstrap, cfg.seed)
        multi = [k for k, i in enumerate(decided) if items[i].user_turns >= 2]
        results["paired_multi_turn"] = paired_table({n: [h[k] for k in multi] for n, h in hits.items()},
                                                    cfg.bootstrap, cfg.seed)
        results["item_hits"] = {name: {items[i].id: h[k] for k, i in enumerate(decided)} for name, h in hits.items()}
        results["judges"] = judge_scoring.beside(
            self.ctx, self.name, [(items[i].a, items[i].b) if items[i].winner == "a" else (items[i].b, items[i].a)
                                  for i in decided], hits, bootstrap=cfg.bootstrap, seed=cfg.seed,
            ids=[items[i].id for i in decided])
        results.update(self.extra(items, diffs))
        results["headline"] = headline(self.name, results)
        return EvalReport(self.name, results, self.markdown(results))

    def score(self, items: list[Comparison], reward_models: dict[str, RewardModel]) -> dict[str, list[float]]:
        """r(A) - r(B) per item and RM, each distinct conversation scored once (packed scorer);
        what each RM could not see goes to ``self.truncation``."""
        unique: dict[str, list[Message]] = {}
        for it in items:
            for conv in (it.a, it.b):
                unique.setdefault(json.dumps(conv, ensure_ascii=False), conv)
        index = {k: i for i, k in enumerate(unique)}
        pairs = [(index[json.dumps(it.a, ensure_ascii=False)], index[json.dumps(it.b, ensure_ascii=False)]) for it in items]
        out: dict[str, list[float]] = {}
        self.seen: dict[str, tuple[list[Seen] | None, dict[str, Any]]] = {}
        task = scoring_task(self.name, len(unique), len(reward_models))
        for name, rm in reward_models.items():
            scored = score_conversations(rm.scorer(self.section.batch_size), list(unique.values()), task)
            out[name] = [scored.rewards[a] - scored.rewards[b] for a, b in pairs]
            self.seen[name] = (items_seen(scored.seen, pairs), scored.limits)
        task.close()
        return out

    def model_figures(self, items: list[Comparison], decided: list[int], hits: list[int], d: list[float]) -> dict[str, Any]:
        cfg = self.section
        by_turn: dict[str, list[int]] = defaultdict(list)
        by_language: dict[str, list[int]] = defaultdict(list)
        for i, h in zip(decided, hits):
            by_turn[turn_bucket(items[i].user_turns)].append(h)
            if items[i].language:
                by_language[str(items[i].language)].append(h)
        ties = [i for i, it in enumerate(items) if it.winner == "tie"]
        return {"accuracy": accuracy(hits, cfg.bootstrap, cfg.seed),
                "by_turns": {b: accuracy(by_turn[b], cfg.bootstrap, cfg.seed) for b in TURN_BUCKETS if by_turn[b]},
                "by_language": {k: accuracy(v, cfg.bootstrap, cfg.seed) for k, v in sorted(by_language.items())},
                "ties": {"votes": len(ties), "rm_also_tie": sum(abs(d[i]) <= cfg.tie_margin for i in ties)}}

    def extra(self, items: list[Comparison], diffs: dict[str, list[float]]) -> dict[str, Any]:
        return {}

    def markdown(self, r: dict[str, Any]) -> str:
        lines = [f"## {self.title()}", "",
                 f"`{r['data']}` ({r['split']}; {self.licence}): {r['items']} items scored of {r['rows']} rows; "
                 f"dropped: {', '.join(f'{k} {v}' for k, v in r['dropped'].items()) or 'none'}. Accuracy on the items "
                 f"a person decided (ties reported apart), 95% bootstrap intervals; "
                 f"{contamination.describe(r['contamination'])}.", "",
                 "| reward model | accuracy | 95% CI | " + " | ".join(f"{b} turns" for b in TURN_BUCKETS) + " | ties (RM also tie) |",
                 "|---|---|---|" + "---|" * len(TURN_BUCKETS) + "---|"]
        for name, m in r["models"].items():
            acc = m["accuracy"]
            cells = [_acc(m["by_turns"].get(b)) for b in TURN_BUCKETS]
            lines.append(f"| {name} | {_num(acc['accuracy'])} | {_ci(acc['ci95'])} | " + " | ".join(cells)
                         + f" | {m['ties']['votes']} ({m['ties']['rm_also_tie']}) |")
        languages = sorted({k for m in r["models"].values() for k in m["by_language"]})
        if len(languages) > 1:
            lines += ["", "| reward model | " + " | ".join(languages) + " |", "|---|" + "---|" * len(languages)]
            for name, m in r["models"].items():
                lines.append(f"| {name} | " + " | ".join(_acc(m["by_language"].get(k)) for k in languages) + " |")
        lines += paired_lines(r)
        lines += judge_scoring.markdown(r.get("judges"), "decided items")
        lines += truncation_lines(r.get("truncation", {}))
        return "\n".join(lines) + "\n"

    def title(self) -> str:
        return f"{self.dataset}: agreement with human votes"


def headline(evaluator: str, r: dict[str, Any]) -> list[str]:
    """'music vs baseline: +x.x points [lo, hi] on N multi-turn human-labelled pairs' (or the
    first pair of RMs when the run's two are not both there)."""
    multi = any(p["n"] for p in r["paired_multi_turn"])
    rows = r["paired_multi_turn"] if multi else r["paired"]
    if not rows:
        return []
    p = next((p for p in rows if {p["a"], p["b"]} == {"music", "baseline"}), rows[0])
    if (p["a"], p["b"]) == ("baseline", "music"):  # say it the way round the question is asked
        lo, hi = p["ci95"] or (0.0, 0.0)
        p = {**p, "a": "music", "b": "baseline", "difference": 0.0 - (p["difference"] or 0.0), "ci95": (0.0 - hi, 0.0 - lo),
             "a_only": p["b_only"], "b_only": p["a_only"]}
    which = "multi-turn human-labelled pairs" if multi else "human-labelled pairs (none multi-turn)"
    return [f"{evaluator}: {say_paired(p['a'], p['b'], p, which)}"]


def paired_lines(r: dict[str, Any]) -> list[str]:
    if not r["paired"]:
        return []
    out = ["", "Paired differences (same items; accuracy of the first minus the second):", ""]
    for label, rows in (("all decided items", r["paired"]), ("multi-turn items (2+ user turns)", r["paired_multi_turn"])):
        for p in rows:
            out.append(f"- {label}: {say_paired(p['a'], p['b'], p)}")
    return out


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _ci(ci: Any) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""


def _acc(a: dict[str, Any] | None) -> str:
    return f"{a['accuracy']:.2f} (n={a['n']})" if a and a["n"] else "-"
