"""User simulators.

- ``transcript`` (the ``paper`` prompt profile): the model reads the whole conversation as a
  transcript and writes the user's next message, at the endpoint's full token budget.
- ``role-flip`` (the ``small-model`` profile): small models asked to "write the user's next
  message" tend to answer as the assistant, so the conversation is shown with the roles swapped
  (the assistant's turns arrive as the other party's messages, the user's turns are the model's
  own earlier replies) and the user's next turn is simply the model's next reply. Few-shot
  examples, a shortened view of the history and short outputs help a 135M model further.

Both validate every candidate (``validation.check_user_turn``) and retry with another sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from music_core.contracts import SimulatedTurn, UserSimulator
from music_core.data import Message
from music_core.synth.templates import load_template
from music_core.synth.text import transcript

from .validation import check_user_turn

TEMPLATES = Path(__file__).parent / "templates"


class SimulationError(Exception):
    """No usable turn after every attempt; ``reasons`` says why each sample was refused."""

    def __init__(self, message: str, reasons: list[str]):
        super().__init__(message)
        self.reasons = reasons


class _ValidatingUser(UserSimulator):
    """Sampling with validation and retries; subclasses build the prompt."""

    opts: RoleFlipOptions | TranscriptOptions

    def prompt(self, history: list[Message]) -> list[Message]:
        raise NotImplementedError

    def check(self, text: str, history: list[Message]) -> tuple[str, str]:
        o = self.opts
        return check_user_turn(text, history, end_token=o.end_token, min_chars=o.min_chars, max_chars=o.max_chars,
                               max_sentences=o.max_sentences, max_copied_share=o.max_copied_share)

    async def next_turn(self, history: list[Message], llm) -> SimulatedTurn:
        msgs = self.prompt(history)
        reasons: list[str] = []
        overrides = {k: v for k, v in (("max_tokens", self.opts.max_tokens), ("temperature", self.opts.temperature))
                     if v is not None}
        for attempt in range(self.opts.max_attempts):
            text = await llm.text(msgs, sample_index=attempt, **overrides)
            verdict, value = self.check(text, history)
            if verdict == "end":
                return SimulatedTurn("", ended=True, attempts=attempt + 1, info={"rejected": reasons})
            if verdict == "ok":
                return SimulatedTurn(value, attempts=attempt + 1, info={"rejected": reasons})
            reasons.append(value)
        raise SimulationError(f"no usable user turn in {self.opts.max_attempts} attempts ({'; '.join(reasons)})", reasons)


@dataclass
class TranscriptOptions:
    template: str | None = None
    end_token: str = "[END]"
    max_attempts: int = 4
    max_sentences: int | None = None  # no cut: a real user writes as much as they need
    min_chars: int = 8
    max_chars: int | None = 2000
    max_tokens: int | None = None     # the endpoint's own budget
    temperature: float | None = None
    max_copied_share: float = 0.5     # of the turn's word 4-grams found in one earlier message


class TranscriptUser(_ValidatingUser):
    name = "transcript"
    options_class = TranscriptOptions
    description = "the paper profile's user simulator: reads the whole conversation, writes the next user message"

    def __init__(self, opts=None, ctx=None):
        super().__init__(opts, ctx)
        self.template = load_template(self.opts.template or TEMPLATES / "user_transcript.yaml")

    def prompt(self, history: list[Message]) -> list[Message]:
        t = self.template
        return [{"role": "system", "content": t.render(t.system, end_token=self.opts.end_token)},
                {"role": "user", "content": t.render(t.instruction, history=transcript(history))}]


@dataclass
class RoleFlipOptions:
    template: str | None = None
    end_token: str = "[END]"
    max_attempts: int = 4
    max_sentences: int | None = 2
    min_chars: int = 8
    max_chars: int | None = 320
    max_tokens: int | None = 48
    temperature: float | None = None
    max_copied_share: float = 0.5
    history_messages: int | None = 4  # the latest messages shown (plus the first user turn); null: all
    message_chars: int | None = 300   # each shown message is cut to this; long prompts slow small models


class RoleFlipUser(_ValidatingUser):
    name = "role-flip"
    options_class = RoleFlipOptions
    description = "the small-model profile's user simulator: continues the conversation from a role-swapped view"

    def __init__(self, opts=None, ctx=None):
        super().__init__(opts, ctx)
        self.template = load_template(self.opts.template or TEMPLATES / "user_role_flip.yaml")

    opts: RoleFlipOptions

    def prompt(self, history: list[Message]) -> list[Message]:
        t = self.template
        examples = "\n\n".join(
            t.render(t.extra.get("example_format", "{assistant}\n-> {reply}"), **ex) for ex in t.few_shot)
        system = t.render(t.system, end_token=self.opts.end_token, examples=examples)
        turns = [m for m in history if m["role"] != "system"]
        keep = self.opts.history_messages
        if keep is not None and len(turns) > keep + 1:
            turns = turns[:1] + turns[-keep:]
        cut = self.opts.message_chars
        flipped = [Message(role="assistant" if m["role"] == "user" else "user",
                           content=m["content"] if cut is None or len(m["content"]) <= cut else m["content"][:cut] + " ...")
                   for m in turns]
        return [Message(role="system", content=system), *flipped]
