"""The four evaluators: which dataset, which columns, how a row reads, what each adds."""

from __future__ import annotations

from typing import Any

from . import sources
from .agreement import PUBLISHED, reference_agreement, rm_agreement
from .evaluator import HumanPreferenceEvaluator
from .options import ArenaConfig, HelpSteer3Config, MTBenchHumanConfig, PPEHumanConfig
from .schema import Comparison


class HelpSteer3(HumanPreferenceEvaluator):
    name = command = "helpsteer3"
    description = "HelpSteer3 preference: human preference strength on multi-turn contexts (-3..3; 0 dropped)"
    config_class, config_key = HelpSteer3Config, "helpsteer3"
    dataset, licence = "nvidia/HelpSteer3", "cc-by-4.0"
    required = ("context", "response1", "response2", "overall_preference")
    parse = staticmethod(sources.helpsteer3)


class MTBenchHuman(HumanPreferenceEvaluator):
    name = command = "mt-bench-human"
    description = "MT-Bench human judgments: agreement per turn with and without ties, as FastChat counts it"
    config_class, config_key = MTBenchHumanConfig, "mt_bench_human"
    dataset, licence = "lmsys/mt_bench_human_judgments", "cc-by-4.0"
    required = ("question_id", "model_a", "model_b", "winner", "judge", "conversation_a", "conversation_b", "turn")
    parse = staticmethod(sources.mt_bench)

    def extra(self, items: list[Comparison], diffs: dict[str, list[float]]) -> dict[str, Any]:
        margin = self.section.tie_margin
        return {"agreement": {name: rm_agreement(items, d, margin) for name, d in diffs.items()},
                "reference_agreement_on_this_data": reference_agreement(items),
                "published_reference": PUBLISHED, "reference_judge": self.section.reference_judge}

    def markdown(self, r: dict[str, Any]) -> str:
        lines = [super().markdown(r).rstrip(), "",
                 f"Agreement with the `{r['reference_judge']}` votes (FastChat's compute_agreement; an RM tie is a "
                 f"reward difference within {r['tie_margin']}):", "",
                 "| judges | turn 1 with ties | turn 1 without | turn 2 with ties | turn 2 without |", "|---|---|---|---|---|"]

        def cells(rows: list[dict[str, Any]]) -> str:
            return " | ".join("n/a" if x["ratio"] is None else f"{x['ratio']:.2f} ({x['agree']}/{x['total']})" for x in rows)

        for name, rows in r["agreement"].items():
            lines.append(f"| {name} vs {r['reference_judge']} | {cells(rows)} |")
        lines.append(f"| {r['reference_judge']} vs {r['reference_judge']} (this data) | "
                     f"{cells(r['reference_agreement_on_this_data'])} |")
        for judges in ("GPT-4 (pair) vs human", "human vs human"):
            pub = [p for p in PUBLISHED if p["judges"] == judges]
            lines.append(f"| {judges} (published) | " + " | ".join(f"{p[k]:.2f}" for p in pub for k in
                                                                    ("with_ties", "without_ties")) + " |")
        return "\n".join(lines) + "\n"


class Arena(HumanPreferenceEvaluator):
    name = command = "arena"
    description = "Chatbot Arena votes (lmsys/chatbot_arena_conversations, lmarena-ai/arena-human-preference-*)"
    config_class, config_key = ArenaConfig, "arena"
    dataset = "lmsys/chatbot_arena_conversations"
    licence = "prompts cc-by-4.0, model outputs under their providers' terms (see each card)"
    required = ("winner", "conversation_a", "conversation_b")
    parse = staticmethod(sources.arena)


class PPEHuman(HumanPreferenceEvaluator):
    name = command = "ppe-human"
    description = "PPE human preference (lmarena-ai/PPE-Human-Preference-V1), by turns from conv_metadata"
    config_class, config_key = PPEHumanConfig, "ppe_human"
    dataset = "lmarena-ai/PPE-Human-Preference-V1"
    licence = "prompts cc-by-4.0, model outputs under their providers' terms (see its card)"
    required = ("prompt", "response_1", "response_2", "winner")
    parse = staticmethod(sources.ppe)
