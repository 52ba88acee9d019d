"""``instruction-contrast``, the paper's strategy: rewrite the user's instruction into a
semantically adjacent one whose good answer is a poor answer to the original, then have the
assistant answer the modified instruction well, and not the original.

Rewrites are validated (not an echo, not a different topic, not an answer) and retried with
fresh samples; a rewrite that never validates raises ContrastError (the engine then uses
``synth.fallback_strategy`` or records an error row).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from music_core.config import options
from music_core.contracts import ContrastError, ContrastOutcome, ContrastRequest, ContrastStrategy
from music_core.synth.templates import load_template
from music_core.synth.text import (
    first_sentences,
    normalize,
    similarity,
    sounds_like_assistant,
    strip_label,
)

TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class InstructionContrastOptions:
    template: str | None = None
    max_attempts: int = 4
    min_similarity: float = 0.15  # below: a different topic, not an adjacent instruction
    max_similarity: float = 0.95  # above: an echo
    max_chars: int = 500
    context_chars: int = 300      # how much of the last assistant turn the rewriter sees
    max_tokens: int = 64
    temperature: float | None = None


class InstructionContrast(ContrastStrategy):
    name = "instruction-contrast"
    description = "the paper's: answer a semantically adjacent, modified instruction"

    def __init__(self, opts=None, ctx=None):
        super().__init__(opts, ctx)
        self.opts = options(InstructionContrastOptions, opts, "synth.strategy_options")
        self.template = load_template(self.opts.template or TEMPLATES / "instruction_contrast.yaml")

    def rewrite_prompt(self, request: ContrastRequest) -> list[dict]:
        t = self.template
        msgs = [{"role": "system", "content": t.system}]
        for ex in t.few_shot:
            msgs.append({"role": "user", "content": t.render(t.instruction, context=ex.get("context", "(none)"),
                                                             instruction=ex["instruction"])})
            msgs.append({"role": "assistant", "content": ex["modified"]})
        last_answer = next((m["content"] for m in reversed(request.history) if m["role"] == "assistant"), "")
        context = last_answer[: self.opts.context_chars] if last_answer else "(none)"
        msgs.append({"role": "user", "content": t.render(t.instruction, context=context, instruction=request.instruction)})
        return msgs

    def check(self, text: str, original: str, context: str = "") -> tuple[bool, str]:
        text = first_sentences(strip_label(text, ("Modified instruction", "Modified request", "Modified", "Instruction", "Request")), 3)
        if not text:
            return False, "empty"
        if normalize(text) == normalize(original):
            return False, "echo of the original"
        sim = similarity(text, original)
        if sim > self.opts.max_similarity:
            return False, f"too close to the original ({sim:.2f})"
        if sim < self.opts.min_similarity:
            return False, f"unrelated to the original ({sim:.2f})"
        if len(text) > self.opts.max_chars:
            return False, "too long"
        if sounds_like_assistant(text):
            return False, "an answer, not an instruction"
        if context and similarity(text, context[: len(text) * 2]) > 0.5:
            return False, "copied from the assistant's answer"
        return True, text

    async def contrast(self, request: ContrastRequest) -> ContrastOutcome:
        msgs = self.rewrite_prompt(request)
        last_answer = next((m["content"] for m in reversed(request.history) if m["role"] == "assistant"), "")
        reasons = []
        overrides = {"max_tokens": self.opts.max_tokens}
        if self.opts.temperature is not None:
            overrides["temperature"] = self.opts.temperature
        for attempt in range(self.opts.max_attempts):
            raw = await request.rewrite_llm.text(msgs, sample_index=attempt, **overrides)
            ok, value = self.check(raw, request.instruction, last_answer)
            if not ok:
                reasons.append(value)
                continue
            guidance = self.template.render(self.template.guidance, original=request.instruction, modified=value)
            answer = await request.assistant.respond(request.history + [{"role": "user", "content": value}],
                                                     request.assistant_llm, guidance=guidance)
            return ContrastOutcome(answer=answer.text, modified_instruction=value,
                                   info={"rewrite_attempts": attempt + 1, "template": self.template.tag,
                                         "similarity": round(similarity(value, request.instruction), 3)})
        raise ContrastError(f"instruction-contrast: no valid rewrite in {self.opts.max_attempts} attempts "
                            f"({'; '.join(reasons)})")
