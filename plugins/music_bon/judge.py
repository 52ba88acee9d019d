"""The ``pairwise`` judge: any configured endpoint compares two whole conversations and returns
a structured verdict; ``last-turn``, the same machinery asked about the final reply of each
conversation only (the audit's per-turn verdict); and ``judge-prefers-chosen``, a pair filter
built on the pairwise judge."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from music_core.config.schema import OptionError
from music_core.contracts import FilterVerdict, Judge, PairFilter, Verdict
from music_core.data import Message, PreferencePair
from music_core.judging import judge_both_orders
from music_core.synth.templates import load_template

TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class JudgeOptions:
    template: str | None = None        # the text verdict's template (a JSON line with reasons)
    label_template: str | None = None  # the probability verdict's template (one letter)
    verdict: str = "auto"              # auto | logprobs | text
    top_logprobs: int = 20             # alternatives per position (OpenAI-compatible servers allow up to 20)
    tie_margin: float = 0.05           # probability verdicts: |P(a better) - 0.5| within this is a tie
    max_attempts: int = 3
    max_chars_per_message: int = 700
    max_tokens: int = 120
    temperature: float | None = 0.0

    def __post_init__(self) -> None:
        if self.verdict not in ("auto", "logprobs", "text"):
            raise OptionError("verdict", "must be auto, logprobs or text")
        if not 0.0 <= self.tie_margin < 0.5:
            raise OptionError("tie_margin", "must be in [0, 0.5)")

# The label's token may come after a few tokens of preamble (a space, a quote, "**"): read the
# first of these positions whose likeliest tokens include a label.
LABEL_POSITIONS = 4


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


def label_probability(top_logprobs: list[dict[str, float]] | None) -> float | None:
    """P(A) / (P(A) + P(B)) at the first answer position that offers a label among its likeliest
    tokens (``" A"``, ``"A"``, ``"**A"`` count as A); a label absent from the list counts as 0.
    None when no position offers one."""
    import math

    for alts in (top_logprobs or [])[:LABEL_POSITIONS]:
        mass = {"A": 0.0, "B": 0.0}
        for token, lp in alts.items():
            label = token.strip().strip("*\"'([{:").strip()
            if label in mass:
                mass[label] += math.exp(lp)
        if mass["A"] or mass["B"]:
            return mass["A"] / (mass["A"] + mass["B"])
    return None


class PairwiseJudge(Judge):
    """Reads the verdict from the judge's probabilities for the labels A and B where the
    endpoint returns log-probabilities (``verdict: auto``; the local engine and OpenAI-compatible
    servers), else parses a JSON verdict from text (Gemini, Anthropic)."""

    name = "pairwise"
    options_class = JudgeOptions
    description = "LLM judge of two whole conversations (coherence, consistency, instructions, helpfulness)"

    default_templates = ("pairwise_judge.yaml", "pairwise_judge_label.yaml")

    def __init__(self, opts=None, ctx=None):
        super().__init__(opts, ctx)
        text, label = self.default_templates
        self.template = load_template(self.opts.template or TEMPLATES / text)
        self.label_template = load_template(self.opts.label_template or TEMPLATES / label)
        self.tie_margin = self.opts.tie_margin

    @property
    def template_tags(self) -> list[str]:
        """The templates' names and versions, for the provenance of every verdict."""
        return [self.template.tag, self.label_template.tag]

    def _prompt(self, t, first: list[Message], second: list[Message]) -> list[Message]:
        cap = self.opts.max_chars_per_message
        return [{"role": "system", "content": t.system},
                {"role": "user", "content": t.render(t.instruction, a=render(first, cap), b=render(second, cap))}]

    async def compare(self, first: list[Message], second: list[Message], llm, prefix_len: int = 0) -> Verdict:
        use_logprobs = self.opts.verdict == "logprobs" or (self.opts.verdict == "auto" and getattr(llm, "supports_logprobs", False))
        if use_logprobs:
            comp = (await llm.chat(self._prompt(self.label_template, first, second), temperature=0.0,
                                   max_tokens=LABEL_POSITIONS, top_logprobs=self.opts.top_logprobs))[0]
            p = label_probability(comp.top_logprobs)
            if p is not None:
                return Verdict("A" if p >= 0.5 else "B", f"P(A)={p:.3f}", comp.text, p_first=p, method="logprobs")
            # no label among the likeliest tokens (or a server that ignores logprobs): a text verdict
        return await self._text_verdict(first, second, llm)

    async def _text_verdict(self, first: list[Message], second: list[Message], llm) -> Verdict:
        msgs = self._prompt(self.template, first, second)
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
        return Verdict("tie", "unparsed judge output", raw, method="unparsed")


class LastTurnJudge(PairwiseJudge):
    """Compares the final assistant reply of two conversations, each against its own history:
    the audit asks it, at every contrasted turn, whether the rejected branch's answer fails the
    user turn that the chosen branch's answer serves."""

    name = "last-turn"
    description = "LLM judge of the final reply of two conversations, each given its own history (audit per turn)"
    default_templates = ("last_turn_judge.yaml", "last_turn_judge_label.yaml")


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
