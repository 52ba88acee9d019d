"""``rewardbench``: RewardBench v1 (``allenai/reward-bench``, split ``filtered``) by hub id or
local path; length-sorted batched scoring; a tie counts as wrong."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, ClassVar

from music_core import contamination, judge_scoring
from music_core.contracts import EvalReport, Evaluator, Problem, RewardModel
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

from .options import RewardBenchConfig
from .pairwise import paired_lines
from .scoring import EXAMPLE_COUNTS, SECTIONS, section_scores

BUILTIN = Path(__file__).parent / "data" / "mini.jsonl"


def example(rec: Any) -> dict[str, Any]:
    """One RewardBench record: a prompt (an empty one cannot be scored) and two answers (an empty
    answer is scored: it is what a model said)."""
    if not isinstance(rec, dict):
        raise UnusableRecord("invalid", "record is not an object")
    missing = [k for k in ("prompt", "chosen", "rejected", "subset") if rec.get(k) is None]
    if missing:
        raise UnusableRecord("missing_field", f"RewardBench record lacks {missing}")
    bad = [k for k in ("prompt", "chosen", "rejected", "subset") if not isinstance(rec[k], str)]
    if bad:
        raise UnusableRecord("invalid", f"RewardBench fields {bad} are not strings")
    if not rec["prompt"].strip():
        raise UnusableRecord("empty_user_turn", "an empty prompt")
    if not rec["subset"]:
        raise UnusableRecord("missing_field", "an empty subset")
    if rec["chosen"] == rec["rejected"]:
        raise UnusableRecord("identical_sides", "chosen identical to rejected")
    return rec


def load_examples(path: str, split: str) -> list[dict[str, Any]]:
    return read_each(str(BUILTIN) if path == "builtin" else path, example, split)


class BenchmarkEvaluator(Evaluator):
    """An evaluator over benchmark data named by its section's ``path`` (null: ``music run``
    passes over it) and ``split``."""

    benchmark: ClassVar[str] = ""

    @classmethod
    def describe(cls, section: Any) -> str:
        return f"{cls.benchmark} on {section.path} ({section.split})"

    @classmethod
    def skip_reason(cls, section: Any) -> str | None:
        return None if section.path else f"eval.{cls.section_name()}.path is null"

    @classmethod
    def preflight(cls, section: Any, ctx: Any) -> list[Problem]:
        """The data resolves (a local path, or a hub id cached or reachable) with the columns of
        its schema (RewardBench v1 and 2 name the same ones)."""
        from music_core.preflight import check_data

        if section.path == "builtin":
            return []
        return check_data(section.path, f"eval.{cls.section_name()}.path", split=section.split,
                          columns=("prompt", "chosen", "rejected", "subset"))


class RewardBench(BenchmarkEvaluator):
    name = "rewardbench"
    command = "rewardbench"
    description = "RewardBench v1 accuracy per subset and section (Chat, Chat Hard, Safety, Reasoning)"
    config_class = RewardBenchConfig
    config_key = "rewardbench"
    benchmark = "RewardBench v1"

    @classmethod
    def headline(cls, result: dict[str, Any], rm: str) -> dict[str, dict[str, Any]]:
        """Each section's score (Chat, Chat Hard, Safety, Reasoning, Overall)."""
        sections = ((result.get("models") or {}).get(rm) or {}).get("sections") or {}
        return {f"RewardBench {s}": {"value": v, "ci95": None, "group": "RewardBench"} for s, v in sections.items()}

    def run(self, reward_models: dict[str, RewardModel]) -> EvalReport:
        cfg = self.section
        if not cfg.path:
            raise ConfigError("config key 'eval.rewardbench.path': no RewardBench data given (hub id, local path or 'builtin')")
        examples = load_examples(cfg.path, cfg.split)
        examples, contaminated = contamination.screen(self.ctx, examples, lambda e: e["prompt"])
        convs_c: list[list[Message]] = [[{"role": "user", "content": e["prompt"]}, {"role": "assistant", "content": e["chosen"]}]
                                        for e in examples]
        convs_r: list[list[Message]] = [[{"role": "user", "content": e["prompt"]}, {"role": "assistant", "content": e["rejected"]}]
                                        for e in examples]
        per_rm: dict[str, Any] = {}
        hits: dict[str, list[int]] = {}
        blocks: dict[str, Any] = {}
        n = len(examples)
        task = scoring_task(self.name, 2 * n, len(reward_models))
        for name, rm in reward_models.items():
            scored = score_conversations(rm.scorer(cfg.batch_size), convs_c + convs_r, task)
            rc, rr = scored.rewards[:n], scored.rewards[n:]  # the scorer sorts by length itself
            correct: dict[str, list[int]] = defaultdict(list)
            hits[name] = [1 if c > r else 0 for c, r in zip(rc, rr)]  # a tie is wrong
            for e, h in zip(examples, hits[name]):
                correct[e["subset"]].append(h)
            acc = {s: sum(v) / len(v) for s, v in correct.items()}
            per_rm[name] = {"subset_accuracy": acc, "subset_counts": {s: len(v) for s, v in correct.items()},
                            "sections": section_scores(acc),
                            "unknown_subsets": sorted(s for s in acc if s not in EXAMPLE_COUNTS)}
            blocks[name] = truncation(items_seen(scored.seen, [(i, i + n) for i in range(n)]), scored.limits, hits[name])
        task.close()
        results = {"data": cfg.path, "split": cfg.split, "examples": n, "n_scored": n, "models": per_rm,
                   "truncation": blocks,
                   "contamination": contaminated, "paired": paired_by_section(examples, hits),
                   "note": ("'builtin' is a 46-example set in RewardBench's schema written for this project, "
                            "two per subset: a smoke test of the pipeline, not RewardBench") if cfg.path == "builtin" else ""}
        results["judges"] = judges_beside(self.ctx, self.name, examples, convs_c, convs_r, hits)
        return EvalReport(self.name, results, to_markdown(results))

    @classmethod
    def estimate(cls, section: Any, cfg: Any, add: Any) -> None:
        """The LLM judges' calls (eval.judges): two per example (the builtin set has 46, the
        filtered split 2,985)."""
        if section.path:
            items = 46 if section.path == "builtin" else judge_scoring.local_records(section.path) or sum(EXAMPLE_COUNTS.values())
            judge_scoring.estimate(cfg, add, items)


def judges_beside(ctx: Any, evaluator: str, examples: list[dict[str, Any]], chosen: list[list[Message]],
                  rejected: list[list[Message]], hits: dict[str, list[int]]) -> dict[str, Any] | None:
    """The LLM judges (eval.judges) on the same examples, with their RewardBench section scores
    (a judge's tie, position flip or unread verdict counts half, as its accuracy does)."""
    block = judge_scoring.beside(ctx, evaluator, list(zip(chosen, rejected)), hits, ids=[str(i) for i in range(len(examples))])
    for j in (block or {}).get("judges", {}).values():
        correct: dict[str, list[float]] = defaultdict(list)
        for e, h in zip(examples, j["hits"]):
            if h is not None:
                correct[e["subset"]].append(h)
        j["sections"] = section_scores({s: sum(v) / len(v) for s, v in correct.items()})
    return block


def paired_by_section(examples: list[dict[str, Any]], hits: dict[str, list[int]]) -> dict[str, Any]:
    """Each pair of RMs on the same examples, per section and over all examples (unweighted:
    the paired test counts examples, where the section score weights subsets)."""
    out = {"all examples": paired_table(hits)}
    for section, subsets in SECTIONS.items():
        idx = [i for i, e in enumerate(examples) if e["subset"] in subsets]
        if idx:
            out[section] = paired_table({n: [h[i] for i in idx] for n, h in hits.items()})
    return out


def to_markdown(r: dict[str, Any]) -> str:
    cols = list(SECTIONS) + ["Overall"]
    lines = ["## RewardBench", "", f"Data: `{r['data']}` ({r['examples']} examples). " + (r["note"] or ""), "",
             "| reward model | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, m in r["models"].items():
        lines.append(f"| {name} | " + " | ".join(f"{m['sections'].get(c, float('nan')):.1f}" for c in cols) + " |")
    lines += ["", contamination.describe(r["contamination"]) + "."]
    for section, rows in r["paired"].items():
        lines += paired_lines(rows, f"{section}: ")
    if r.get("judges"):
        lines += judge_scoring.markdown(r["judges"], "examples")
        lines += ["", "| judge | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for name, j in r["judges"]["judges"].items():
            lines.append(f"| judge {name} | " + " | ".join(f"{j['sections'].get(c, float('nan')):.1f}" for c in cols) + " |")
    lines += truncation_lines(r.get("truncation", {}))
    return "\n".join(lines) + "\n"
