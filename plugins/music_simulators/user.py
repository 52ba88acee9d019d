"""The ``role-flip`` user simulator.

Small models asked to "write the user's next message" tend to answer as the assistant. So the
conversation is shown with the roles swapped: the assistant's turns arrive as the other
party's messages and the user's turns as the model's own earlier replies, which makes the
user's next turn simply the model's next reply. Few-shot examples sit in the system prompt,
outputs are kept short, and every candidate is validated (not an assistant-style answer, not
a copy of earlier text, not too long) and retried with another sample when it fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from music_core.config import options
from music_core.contracts import SimulatedTurn, UserSimulator
from music_core.data import Message
from music_core.synth.templates import load_template
from music_core.synth.text import first_sentences, similarity, sounds_like_assistant, strip_label

TEMPLATES = Path(__file__).parent / "templates"
FLIP = {"user": "assistant", "assistant": "user"}


class SimulationError(Exception):
    """No usable turn after every attempt."""


@dataclass
class RoleFlipOptions:
    template: str | None = None
    end_token: str = "[END]"
    max_attempts: int = 4
    max_sentences: int = 2
    min_chars: int = 8
    max_chars: int = 320
    max_tokens: int = 48
    temperature: float | None = None
    history_messages: int = 4  # the latest messages shown (plus the first user turn)
    message_chars: int = 300   # each shown message is cut to this; long prompts slow small models


class RoleFlipUser(UserSimulator):
    name = "role-flip"
    description = "continues a conversation as the user, from a role-swapped view of it"

    def __init__(self, opts=None, ctx=None):
        super().__init__(opts, ctx)
        self.opts = options(RoleFlipOptions, opts, "synth.user_simulator_options")
        self.template = load_template(self.opts.template or TEMPLATES / "user_role_flip.yaml")

    def prompt(self, history: list[Message]) -> list[Message]:
        t = self.template
        examples = "\n\n".join(
            t.render(t.extra.get("example_format", "{assistant}\n-> {reply}"), **ex) for ex in t.few_shot)
        system = t.render(t.system, end_token=self.opts.end_token, examples=examples)
        turns = [m for m in history if m["role"] != "system"]
        if len(turns) > self.opts.history_messages + 1:
            turns = turns[:1] + turns[-self.opts.history_messages:]
        cut = self.opts.message_chars
        return [{"role": "system", "content": system}] + [
            {"role": FLIP[m["role"]], "content": m["content"] if len(m["content"]) <= cut else m["content"][:cut] + " ..."}
            for m in turns]

    def check(self, text: str, history: list[Message]) -> tuple[str, str]:
        """('end' | 'ok' | 'bad', cleaned text or the reason it is bad)."""
        o = self.opts
        if o.end_token.lower() in text.lower()[: len(o.end_token) + 8] or text.strip().lower() in ("end", "[end]"):
            return "end", ""
        text = first_sentences(strip_label(text, ("User:", "Me:", "You:", "Reply:", "->")), o.max_sentences)
        if len(text) < o.min_chars:
            return "bad", "too short"
        if len(text) > o.max_chars:
            return "bad", "too long"
        if sounds_like_assistant(text):
            return "bad", "sounds like the assistant"
        earlier = [m["content"] for m in history if m["role"] in ("user", "assistant")]
        if any(similarity(text, e) > 0.6 for e in earlier[-4:]):
            return "bad", "repeats an earlier turn"
        return "ok", text

    async def next_turn(self, history: list[Message], llm) -> SimulatedTurn:
        msgs = self.prompt(history)
        reasons = []
        for attempt in range(self.opts.max_attempts):
            overrides = {"max_tokens": self.opts.max_tokens}
            if self.opts.temperature is not None:
                overrides["temperature"] = self.opts.temperature
            text = await llm.text(msgs, sample_index=attempt, **overrides)
            verdict, value = self.check(text, history)
            if verdict == "end":
                return SimulatedTurn("", ended=True, attempts=attempt + 1, info={"rejected": reasons})
            if verdict == "ok":
                return SimulatedTurn(value, attempts=attempt + 1, info={"rejected": reasons})
            reasons.append(value)
        raise SimulationError(f"no usable user turn in {self.opts.max_attempts} attempts ({'; '.join(reasons)})")
