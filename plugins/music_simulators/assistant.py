"""The ``default`` assistant simulator: answers the conversation as it stands, with a contrast
strategy's guidance (if any) added to the system message."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from music_core.contracts import AssistantSimulator, SimulatedTurn
from music_core.data import Message
from music_core.synth.templates import load_template

TEMPLATES = Path(__file__).parent / "templates"


class EmptyAnswerError(Exception):
    pass


@dataclass
class AssistantOptions:
    template: str | None = None
    max_attempts: int = 3
    max_tokens: int | None = None
    temperature: float | None = None
    min_chars: int = 2


class DefaultAssistant(AssistantSimulator):
    name = "default"
    options_class = AssistantOptions
    description = "answers the last user turn; strategies may add guidance"

    def __init__(self, opts=None, ctx=None):
        super().__init__(opts, ctx)
        self.template = load_template(self.opts.template or TEMPLATES / "assistant.yaml")

    def prompt(self, history: list[Message], guidance: str | None) -> list[Message]:
        msgs = list(history)
        system = msgs[0]["content"] if msgs and msgs[0]["role"] == "system" else self.template.system
        if msgs and msgs[0]["role"] == "system":
            msgs = msgs[1:]
        if guidance:
            system = f"{system}\n\n{guidance}" if system else guidance
        return ([Message(role="system", content=system)] if system else []) + msgs

    async def respond(self, history: list[Message], llm, guidance: str | None = None) -> SimulatedTurn:
        msgs = self.prompt(history, guidance)
        overrides = {k: v for k, v in (("max_tokens", self.opts.max_tokens), ("temperature", self.opts.temperature)) if v is not None}
        for attempt in range(self.opts.max_attempts):
            text = (await llm.text(msgs, sample_index=attempt, **overrides)).strip()
            if len(text) >= self.opts.min_chars:
                return SimulatedTurn(text, attempts=attempt + 1)
        raise EmptyAnswerError(f"no non-empty answer in {self.opts.max_attempts} attempts")
