"""``instruction-contrast``, the paper's strategy: rewrite the user's instruction into a
semantically adjacent one whose good answer is a poor answer to the original, then have the
assistant answer the modified instruction well, and not the original.

Rewrites are validated (not an echo, not a different topic, not an answer) and retried with
fresh samples; a rewrite that never validates raises ContrastError (the engine then uses
``synth.fallback_strategy`` or records an error row).

The prompt profile (``synth.prompt_profile``) sets the defaults, each overridable in
``synth.strategy_options``:

- ``paper``: the rewriter sees the whole conversation so far; the assistant then answers the
  modified instruction exactly as it would any instruction, seeing only ``u'_t`` (as in the paper).
- ``small-model``: the rewriter sees only the last answer, cut to 300 characters, with few-shot
  examples and a 64-token budget; the assistant is also told not to answer the original
  instruction (a 135M model otherwise answers ``u_t`` anyway).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from music_core.config.schema import OptionError
from music_core.contracts import ContrastError, ContrastOutcome, ContrastRequest, ContrastStrategy
from music_core.data import Message
from music_core.errors import ConfigError
from music_core.synth.templates import load_template
from music_core.synth.text import (
    first_sentences,
    normalize,
    similarity,
    sounds_like_assistant,
    strip_label,
    transcript,
)

TEMPLATES = Path(__file__).parent / "templates"

# What each prompt profile sets when the option is left unset (null).
PROFILE_DEFAULTS = {
    "paper": {"template": "instruction_contrast_paper.yaml", "context": "history", "context_chars": None,
              "guidance": False, "max_tokens": None, "max_chars": 2000},
    "small-model": {"template": "instruction_contrast.yaml", "context": "last-answer", "context_chars": 300,
                    "guidance": True, "max_tokens": 64, "max_chars": 500},
}


@dataclass
class InstructionContrastOptions:
    template: str | None = None
    max_attempts: int = 4
    min_similarity: float = 0.15  # below: a different topic, not an adjacent instruction
    max_similarity: float = 0.95  # above: an echo
    max_chars: int | None = None
    context: str | None = None    # what the rewriter sees: history (the whole conversation) or last-answer
    context_chars: int | None = None  # cut each shown message to this many characters (null: no cut)
    guidance: bool | None = None  # also tell the assistant not to answer the original instruction
    max_tokens: int | None = None
    temperature: float | None = None

    def __post_init__(self) -> None:  # None: the prompt profile's default, filled in at construction
        if self.context not in (None, "history", "last-answer"):
            raise OptionError("context", f"{self.context!r} is not history or last-answer")
        if not 0.0 <= self.min_similarity <= self.max_similarity <= 1.0:
            raise OptionError("min_similarity", "needs 0 <= min_similarity <= max_similarity <= 1")
        if self.max_attempts < 1:
            raise OptionError("max_attempts", "must be at least 1")


class InstructionContrast(ContrastStrategy):
    name = "instruction-contrast"
    rewrite_calls_per_turn = 1  # one rewrite of the instruction, then the answer to it
    options_class = InstructionContrastOptions
    description = "the paper's: answer a semantically adjacent, modified instruction"

    def __init__(self, opts=None, ctx=None):
        super().__init__(opts, ctx)
        self.profile = getattr(ctx, "prompt_profile", None) or "paper"
        for key, value in PROFILE_DEFAULTS[self.profile].items():
            if getattr(self.opts, key) is None:
                setattr(self.opts, key, value)
        if self.opts.context not in ("history", "last-answer"):
            raise ConfigError(f"config key 'synth.strategy_options.context': {self.opts.context!r} is not "
                              f"'history' or 'last-answer'")
        template = Path(self.opts.template)
        self.template = load_template(template if template.is_absolute() or template.exists() else TEMPLATES / template)

    def rewrite_prompt(self, request: ContrastRequest) -> list[Message]:
        t = self.template
        msgs: list[Message] = [{"role": "system", "content": t.system}]
        for ex in t.few_shot:
            msgs.append({"role": "user", "content": t.render(t.instruction, context=ex.get("context", "(none)"),
                                                             instruction=ex["instruction"])})
            msgs.append({"role": "assistant", "content": ex["modified"]})
        if self.opts.context == "history":
            shown = [m for m in request.history if m["role"] != "system"]
            context = transcript(shown, self.opts.context_chars) or "(none: this is the first message)"
        else:
            last_answer = next((m["content"] for m in reversed(request.history) if m["role"] == "assistant"), "")
            cut = self.opts.context_chars
            context = (last_answer if cut is None else last_answer[:cut]) if last_answer else "(none)"
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
        if self.opts.max_chars is not None and len(text) > self.opts.max_chars:
            return False, "too long"
        if sounds_like_assistant(text):
            return False, "an answer, not an instruction"
        if context and self.opts.context == "last-answer" and similarity(text, context[: len(text) * 2]) > 0.5:
            return False, "copied from the assistant's answer"
        return True, text

    async def contrast(self, request: ContrastRequest) -> ContrastOutcome:
        msgs = self.rewrite_prompt(request)
        last_answer = next((m["content"] for m in reversed(request.history) if m["role"] == "assistant"), "")
        reasons = []
        overrides = {} if self.opts.max_tokens is None else {"max_tokens": self.opts.max_tokens}
        if self.opts.temperature is not None:
            overrides["temperature"] = self.opts.temperature
        for attempt in range(self.opts.max_attempts):
            raw = await request.rewrite_llm.text(msgs, sample_index=attempt, **overrides)
            ok, value = self.check(raw, request.instruction, last_answer)
            if not ok:
                reasons.append(value)
                continue
            guidance = (self.template.render(self.template.guidance, original=request.instruction, modified=value)
                        if self.opts.guidance and self.template.guidance else None)
            answer = await request.assistant.respond(request.history + [{"role": "user", "content": value}],
                                                     request.assistant_llm, guidance=guidance)
            return ContrastOutcome(answer=answer.text, modified_instruction=value, attempts=attempt + 1,
                                   info={"template": self.template.tag,
                                         "rewrite_rejected": reasons, "profile": self.profile,
                                         "similarity": round(similarity(value, request.instruction), 3)})
        raise ContrastError(f"instruction-contrast: no valid rewrite in {self.opts.max_attempts} attempts "
                            f"({'; '.join(reasons)})")
