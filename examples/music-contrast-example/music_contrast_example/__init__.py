"""``audience-shift``: answer the user's instruction for another audience than the one the
conversation implies. Semantically adjacent, fluent, and wrong for this user."""

from __future__ import annotations

from dataclasses import dataclass, field

from music_core import hookimpl
from music_core.config import options
from music_core.contracts import ContrastOutcome, ContrastRequest, ContrastStrategy


@dataclass
class AudienceOptions:
    audiences: list[str] = field(default_factory=lambda: ["a five-year-old", "a domain expert", "a busy executive"])


class AudienceShift(ContrastStrategy):
    name = "audience-shift"
    description = "answers the instruction for a different audience"

    def __init__(self, opts=None, ctx=None):
        super().__init__(opts, ctx)
        self.opts = options(AudienceOptions, opts, "synth.strategy_options")

    async def contrast(self, request: ContrastRequest) -> ContrastOutcome:
        audience = request.rng.choice(self.opts.audiences)
        modified = f"{request.instruction} (Answer for {audience}.)"
        answer = await request.assistant.respond(request.history + [{"role": "user", "content": modified}],
                                                 request.assistant_llm)
        return ContrastOutcome(answer=answer.text, modified_instruction=modified, info={"audience": audience})


@hookimpl
def register_contrast_strategies(register):
    register(AudienceShift)
