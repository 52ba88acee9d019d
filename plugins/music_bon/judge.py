"""The ``pairwise`` judge: any configured endpoint compares two whole conversations and returns
a structured verdict; and ``judge-prefers-chosen``, a pair filter built on it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from music_core.config import options
from music_core.contracts import FilterVerdict, Judge, PairFilter, Verdict
from music_core.data import Message, PreferencePair
from music_core.judging import judge_both_orders
from music_core.synth.templates import load_template

TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class JudgeOptions:
    template: str | None = None
    max_attempts: int = 3
    max_chars_per_message: int = 700
    max_tokens: int = 120
    temperature: float | None = 0.0


def render(messages: list[Message], max_chars: int) -> str:
    lines = []
    for m in messages:
        text = m["content"] if len(m["content"]) <= max_chars else m["content"][:max_chars] + " [...]"
        lines.append(f"{m['role'].capitalize()}: {text}")
    return "\n".join(lines)


def parse_verdict(text: str) -> Verdict | None:
    """JSON first; then a 'winner: X' phrase; then a bare leading letter."""
    match = re.search(r"\{.*\}", text, re.S)
    if match:
        try:
            obj = json.loads(match.group(0))
            w = str(obj.get("winner", "")).strip().upper()
            if w in ("A", "B", "TIE"):
                return Verdict("tie" if w == "TIE" else w, str(obj.get("reasons", "")), text)  # type: ignore[arg-type]
        except (json.JSONDecodeError, AttributeError):
            pass
    m = re.search(r"winner\W{0,5}(A|B|tie)\b", text, re.I)
    if m:
        w = m.group(1).upper()
        return Verdict("tie" if w == "TIE" else w, text.strip()[:300], text)  # type: ignore[arg-type]
    m = re.match(r"\s*\(?(A|B)\)?(\W|$)", text)
    if m:
        return Verdict(m.group(1), text.strip()[:300], text)  # type: ignore[arg-type]
    return None


class PairwiseJudge(Judge):
    name = "pairwise"
    description = "LLM judge of two whole conversations (coherence, consistency, instructions, helpfulness)"

    def __init__(self, opts=None, ctx=None):
        super().__init__(opts, ctx)
        self.opts = options(JudgeOptions, opts, "eval.bon.judge_options")
        self.template = load_template(self.opts.template or TEMPLATES / "pairwise_judge.yaml")
        self.unparsed = 0

    async def compare(self, first: list[Message], second: list[Message], llm, prefix_len: int = 0) -> Verdict:
        t, cap = self.template, self.opts.max_chars_per_message
        msgs = [{"role": "system", "content": t.system},
                {"role": "user", "content": t.render(t.instruction, a=render(first, cap), b=render(second, cap))}]
        overrides = {"max_tokens": self.opts.max_tokens}
        if self.opts.temperature is not None:
            overrides["temperature"] = self.opts.temperature
        raw = ""
        for attempt in range(self.opts.max_attempts):
            if attempt and overrides.get("temperature") == 0.0:
                overrides["temperature"] = 0.7  # a greedy answer repeats itself: sample on retries
            raw = await llm.text(msgs, sample_index=attempt, **overrides)
            verdict = parse_verdict(raw)
            if verdict is not None:
                return verdict
        self.unparsed += 1
        return Verdict("tie", "unparsed judge output", raw)


class JudgePrefersChosen(PairFilter):
    """Keeps a synthesized pair only when the judge prefers chosen in both orders."""

    name = "judge-prefers-chosen"
    description = "keeps a pair only if the judge (role 'judge') prefers chosen in both orders"

    def __init__(self, opts=None, ctx=None):
        super().__init__(opts, ctx)
        self.judge = PairwiseJudge(opts, ctx)

    async def keep(self, pair: PreferencePair) -> FilterVerdict:
        judged = await judge_both_orders(self.judge, pair.chosen, pair.rejected, self.ctx.role("judge"))
        if judged.outcome == "a":
            return FilterVerdict(True)
        return FilterVerdict(False, f"judge outcome {judged.outcome!r}: {judged.first.reasons[:120]}")
