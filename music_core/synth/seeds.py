"""Seeds: conversations from a seed source, cut at a random turn boundary (seeded) into the
context that both branches share and the first user turn ``u_1``."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..config.schema import SeedsConfig
from ..data import Conversation, Message, content_hash


@dataclass(frozen=True)
class Seed:
    id: str                 # stable: the conversation id and where it was cut
    conversation_id: str
    source: str
    context: list[Message]  # system message (if any) and earlier exchanges
    first_user_turn: str    # u_1
    group: str = ""         # hash of the whole seed conversation: mix keeps a group in one split

    @property
    def context_turns(self) -> int:
        return sum(1 for m in self.context if m["role"] == "user")


def cut(conv: Conversation, cfg: SeedsConfig) -> Seed | None:
    """Keep k complete exchanges (min..max, seeded per conversation) and take the next user
    message as u_1. None when the conversation has no user turn to start from."""
    msgs = conv.messages
    head = [msgs[0]] if msgs and msgs[0]["role"] == "system" else []
    body = msgs[len(head):]
    user_positions = [i for i, m in enumerate(body) if m["role"] == "user"]
    if not user_positions:
        return None
    rng = random.Random(f"{cfg.seed}:{conv.id}")
    hi = min(cfg.max_context_turns, len(user_positions) - 1)
    lo = min(cfg.min_context_turns, hi)
    k = rng.randint(lo, hi)
    start = user_positions[k]
    return Seed(id=content_hash(conv.id, k), conversation_id=conv.id, source=conv.source,
                context=head + body[:start], first_user_turn=body[start]["content"], group=group_key(msgs))


def group_key(messages: list[Message]) -> str:
    """Seeds cut from a preference pair's chosen side share this key with the pair itself, so
    ``music mix`` can keep both on the same side of the train/eval split."""
    return content_hash(messages)


def select(conversations: list[Conversation], cfg: SeedsConfig) -> list[Seed]:
    """Seeded shuffle, cut, limit; the order is the order pairs are written in."""
    convs = sorted(conversations, key=lambda c: c.id)
    random.Random(cfg.seed).shuffle(convs)
    seeds = [s for s in (cut(c, cfg) for c in convs) if s is not None]
    seen, unique = set(), []
    for s in seeds:  # duplicate conversations would make duplicate pairs
        if s.id not in seen:
            seen.add(s.id)
            unique.append(s)
    return unique[: cfg.limit] if cfg.limit is not None else unique
