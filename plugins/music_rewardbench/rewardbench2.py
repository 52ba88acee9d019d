"""``rewardbench-2``: RewardBench 2 (``allenai/reward-bench-2``, split ``test``) by hub id or
local path, from its own schema: ``prompt``, ``chosen`` and ``rejected`` as lists of completions,
``num_correct``, ``subset`` and, for the Ties subset, ``ref:N`` / ``tied:N`` ids. Scored as
``rewardbench`` 0.1.4 scores it (``scoring_v2``); the overall is the mean of the six subsets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from music_core import contamination
from music_core.contracts import EvalReport, RewardModel
from music_core.data import Message
from music_core.errors import ConfigError
from music_core.formats import read_each
from music_core.records import UnusableRecord
from music_core.scoring import (
    items_seen,
    score_conversations,
    scoring_task,
    truncation,
    truncation_lines,
)
from music_core.stats import paired_table

from .options import RewardBench2Config
from .pairwise import paired_lines
from .rewardbench import BenchmarkEvaluator
from .scoring_v2 import SUBSETS_V2, example_result, subset_scores

BUILTIN = Path(__file__).parent / "data" / "mini_v2.jsonl"


def example_v2(rec: Any) -> dict[str, Any]:
    """One RewardBench 2 record; an empty completion is scored (it is what a model said)."""
    if not isinstance(rec, dict):
        raise UnusableRecord("invalid", "record is not an object")
    missing = [k for k in ("prompt", "subset", "chosen", "rejected") if rec.get(k) is None]
    if missing:
        raise UnusableRecord("missing_field", f"RewardBench 2 record lacks {missing}")
    problems = [k for k in ("prompt", "subset") if not isinstance(rec.get(k), str) or not rec.get(k)]
    problems += [k for k in ("chosen", "rejected") if not isinstance(rec.get(k), list) or not rec.get(k)
                 or not all(isinstance(x, str) for x in rec[k])]
    if problems:
        reason = "empty_user_turn" if problems == ["prompt"] and isinstance(rec["prompt"], str) else "invalid"
        raise UnusableRecord(reason, f"RewardBench 2 record lacks or has a bad {problems} "
                                     f"(chosen and rejected are lists of completions)")
    if not rec["prompt"].strip():
        raise UnusableRecord("empty_user_turn", "an empty prompt")
    rec = dict(rec)
    rec["num_correct"] = int(rec.get("num_correct") or len(rec["chosen"]))
    if str(rec["subset"]).lower() == "ties" and ":" not in str(rec.get("id", "")):
        raise UnusableRecord("invalid", "a Ties record needs an id of the form ref:N or tied:N")
    return rec


def load_examples_v2(path: str, split: str) -> list[dict[str, Any]]:
    return read_each(str(BUILTIN) if path == "builtin" else path, example_v2, split)


class RewardBench2(BenchmarkEvaluator):
    name = "rewardbench-2"
    command = "rewardbench2"
    description = "RewardBench 2: best-of-4 accuracy per subset (Factuality, Precise IF, Math, Safety, Focus, Ties)"
    config_class = RewardBench2Config
    config_key = "rewardbench2"
    benchmark = "RewardBench 2"

    @classmethod
    def headline(cls, result: dict[str, Any], rm: str) -> dict[str, dict[str, Any]]:
        subsets = ((result.get("models") or {}).get(rm) or {}).get("subsets") or {}
        if "Overall" not in subsets:
            return {}
        return {"RewardBench 2 Overall": {"value": subsets["Overall"], "ci95": None, "group": "RewardBench"}}

    def run(self, reward_models: dict[str, RewardModel]) -> EvalReport:
        cfg = self.section
        if not cfg.path:
            raise ConfigError("config key 'eval.rewardbench2.path': no RewardBench 2 data given "
                              "(hub id allenai/reward-bench-2, a local path, or 'builtin')")
        examples = load_examples_v2(cfg.path, cfg.split)
        examples, contaminated = contamination.screen(self.ctx, examples, lambda e: e["prompt"])
        convs: list[list[Message]] = []
        owner: list[int] = []
        for i, e in enumerate(examples):
            for completion in list(e["chosen"]) + list(e["rejected"]):  # correct ones first, as RewardBench 2 orders them
                convs.append([{"role": "user", "content": e["prompt"]}, {"role": "assistant", "content": completion}])
                owner.append(i)
        per_rm: dict[str, Any] = {}
        hits: dict[str, list[int]] = {}
        blocks: dict[str, Any] = {}
        task = scoring_task(self.name, len(convs), len(reward_models))
        members: list[list[int]] = [[] for _ in examples]
        for k, i in enumerate(owner):
            members[i].append(k)
        for name, rm in reward_models.items():
            scored = score_conversations(rm.scorer(cfg.batch_size), convs, task)
            scores: list[list[float]] = [[scored.rewards[k] for k in idx] for idx in members]
            # paired per example: right when a correct completion alone has the best score (Ties is a
            # per-prompt score of its own and stays out of the paired test)
            hits[name] = [int(example_result(sc) == 1.0) for e, sc in zip(examples, scores) if e["subset"].lower() != "ties"]
            per_rm[name] = {"subsets": {k: 100 * v for k, v in subset_scores(examples, scores).items()},
                            "subset_counts": {s: sum(1 for e in examples if e["subset"] == s)
                                              for s in sorted({e["subset"] for e in examples})}}
            per_item = [int(example_result(sc) == 1.0) if e["subset"].lower() != "ties" else None
                        for e, sc in zip(examples, scores)]
            blocks[name] = truncation(items_seen(scored.seen, members), scored.limits, per_item)
        task.close()
        results = {"data": cfg.path, "split": cfg.split, "examples": len(examples), "n_scored": len(examples),
                   "completions": len(convs), "truncation": blocks,
                   "models": per_rm, "contamination": contaminated, "paired": paired_table(hits),
                   "note": ("'builtin' is a smoke set in RewardBench 2's schema written for this project (two "
                            "prompts per subset): it checks the pipeline, it is not RewardBench 2") if cfg.path == "builtin" else ""}
        return EvalReport(self.name, results, to_markdown(results))


def to_markdown(r: dict[str, Any]) -> str:
    cols = [s for s in SUBSETS_V2] + ["Overall"]
    lines = ["## RewardBench 2", "", f"Data: `{r['data']}` ({r['examples']} prompts, {r['completions']} completions). "
             + (r["note"] or ""), "", "| reward model | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, m in r["models"].items():
        lines.append(f"| {name} | " + " | ".join(f"{m['subsets'][c]:.1f}" if c in m["subsets"] else "–" for c in cols) + " |")
    lines += ["", contamination.describe(r["contamination"]) + "."]
    lines += paired_lines(r["paired"], "examples outside Ties: ")
    lines += truncation_lines(r.get("truncation", {}))
    return "\n".join(lines) + "\n"
