"""Conversations to token ids for reward models, done right for multi-turn data:

- the chat template is applied once, and special tokens are added only when the template does
  not already emit them (no double BOS, no missing one);
- encoders without a chat template get a plain one (``role: content``, messages separated by
  the SEP token), saved with the model so that plain transformers formats text the same way;
- every message ends with an end-of-message token (found by probing the template); the
  per-turn head reads the reward there, the last-token head at the last real token;
- conversations over ``max_length`` lose their oldest turns (the system message and the final
  turns stay), counted, never silently; if the last exchange alone is too long, its start is cut.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ENCODER_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}"
    "{% if not loop.last %} {{ sep_token }} {% endif %}{% endfor %}"
)
_PROBE = "Zq7 probe answer"


@dataclass
class Encoded:
    ids: list[int]
    turn_ends: list[int]        # index of each assistant message's end-of-message token
    dropped_turns: int = 0      # exchanges removed from the front
    cut_tokens: int = 0         # tokens removed from the start of the kept text


@dataclass
class TruncationStats:
    conversations: int = 0
    shortened: int = 0
    dropped_turns: int = 0
    hard_cut: int = 0
    shared_reward_position: int = 0
    examples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "examples"}


class ConversationEncoder:
    def __init__(self, tokenizer: Any, max_length: int):
        self.tok = tokenizer
        self.max_length = max_length
        if getattr(tokenizer, "chat_template", None) is None:
            if tokenizer.sep_token is None:
                raise ValueError("the tokenizer has neither a chat template nor a SEP token to separate messages")
            tokenizer.chat_template = ENCODER_TEMPLATE.replace("{{ sep_token }}", tokenizer.sep_token)
        probe = self.render([{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE}])
        self.add_special = not (tokenizer.bos_token and probe.startswith(tokenizer.bos_token))
        try:
            self.eom_id: int | None = self._probe_end_of_message()
        except ValueError:
            self.eom_id = None  # a foreign template: fine for last-token scoring, which needs no turn ends

    def render(self, messages: Sequence[Mapping[str, Any]]) -> str:
        return self.tok.apply_chat_template(messages, tokenize=False)

    def tokenize(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=self.add_special)["input_ids"]

    def _probe_end_of_message(self) -> int:
        """The token that closes a message, found as the first token after a known content."""
        msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE},
                {"role": "user", "content": "ok"}, {"role": "assistant", "content": "done"}]
        text = self.render(msgs)
        enc = self.tok(text, add_special_tokens=self.add_special, return_offsets_mapping=True)
        end = text.index(_PROBE) + len(_PROBE)
        for tid, (start, _) in zip(enc["input_ids"], enc["offset_mapping"]):
            if start >= end and (self.tok.convert_ids_to_tokens(tid) or "").strip():
                return tid
        raise ValueError("could not find the token that ends a message in the chat template")

    def encode(self, messages: Sequence[Mapping[str, Any]]) -> Encoded:
        """Token ids within max_length, with the positions of the assistant turn ends."""
        head = [messages[0]] if messages and messages[0]["role"] == "system" else []
        body = messages[len(head):]
        dropped = 0
        while True:
            ids = self.tokenize(self.render([*head, *body]))
            if len(ids) <= self.max_length or len(body) <= 2:
                break
            body = body[2:]  # drop the oldest exchange (user + assistant)
            dropped += 1
        cut = max(0, len(ids) - self.max_length)
        if cut:
            ids = ids[cut:]  # the end holds the reward position: keep it
        return Encoded(ids, assistant_turn_ends(ids, self.eom_id), dropped, cut)


def assistant_turn_ends(ids: list[int], eom_id: int | None) -> list[int]:
    """Positions of the assistant messages' end-of-message tokens. Messages alternate and end
    with the assistant, so the ends are the 1st, 3rd, ... end-of-message token counted from the
    back, len//2 of them, whether or not a system message (or a template's default one) leads.
    The exported model's remote code applies the same rule to raw token ids."""
    if eom_id is None:
        return [len(ids) - 1]
    eoms = [i for i, t in enumerate(ids) if t == eom_id]
    ends = sorted(eoms[len(eoms) - 1 - 2 * k] for k in range(len(eoms) // 2))
    return ends or [len(ids) - 1]


def encode_pair(enc: ConversationEncoder, chosen: Sequence[Mapping[str, Any]], rejected: Sequence[Mapping[str, Any]], stats: TruncationStats) -> tuple[Encoded, Encoded]:
    c, r = enc.encode(chosen), enc.encode(rejected)
    for e in (c, r):
        stats.conversations += 1
        if e.dropped_turns or e.cut_tokens:
            stats.shortened += 1
        stats.dropped_turns += e.dropped_turns
        stats.hard_cut += 1 if e.cut_tokens else 0
    # Lint: if both sides are identical up to the last token, the reward sees the same input
    # for chosen and rejected (the difference was truncated away, or lies nowhere).
    common = 0
    for a, b in zip(c.ids, r.ids):
        if a != b:
            break
        common += 1
    if common >= min(len(c.ids), len(r.ids)):
        stats.shared_reward_position += 1
        if len(stats.examples) < 3:
            stats.examples.append(f"{len(c.ids)} / {len(r.ids)} tokens, identical up to the reward position")
    return c, r
