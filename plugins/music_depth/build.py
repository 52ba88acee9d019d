"""Depth pairs from multi-turn conversations: two conversations identical except one assistant
answer, ``d`` answers from the end (``d = 0`` the last answer, ``d = 1`` the one before, ...);
every later message is unchanged, so a reward model can see the defect only from what follows.

The defects are rule-based (no LLM call), each applied only where it changes the answer:

- ``off-topic``: an answer from another conversation at a similar position (the same assistant
  turn number where another conversation has one, else the nearest), drawn with the seed;
- ``repeat``: the previous assistant answer repeated (it ignores the new instruction); not at
  the first answer, nor where the previous answer is the same text;
- ``first-sentence``: the answer cut to its first sentence (up to the first ``.``, ``!`` or
  ``?`` followed by a space, or the first line break); only where that shortens it.

Chosen is the original conversation (trailing user turns trimmed, so it ends with an answer),
rejected the one with the defect. Each pair's ``meta``: ``source_id``, ``depth``,
``num_turns`` (assistant turns), ``defect`` and ``message_index`` (the changed message). The
same conversations, depths, kinds and seed give the same pairs.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from music_core.data import Conversation, Message, PreferencePair, message

KINDS = ("off-topic", "repeat", "first-sentence")
DEFAULT_DEPTHS = (0, 1, 2)
SENTENCE_END = re.compile(r"[.!?]+(?=\s)|\n")


@dataclass
class Built:
    """The pairs, and what became of the conversations: counts by depth and kind, and why a
    conversation, depth or kind gave no pair."""

    pairs: list[PreferencePair]
    conversations: int
    used: int
    left_out: Counter[str] = field(default_factory=Counter)

    def counts(self) -> dict[str, dict[str, int]]:
        """Pairs by depth and by kind, and by ``"d/kind"``."""
        out: dict[str, Counter[str]] = {"by_depth": Counter(), "by_kind": Counter(), "by_depth_kind": Counter()}
        for p in self.pairs:
            d, k = p.meta["depth"], p.meta["defect"]
            out["by_depth"][str(d)] += 1
            out["by_kind"][k] += 1
            out["by_depth_kind"][f"{d}/{k}"] += 1
        return {name: dict(sorted(c.items())) for name, c in out.items()}


def answered(messages: Sequence[Message]) -> list[Message]:
    """The conversation up to its last assistant message (trailing user turns trimmed)."""
    end = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
    return [message(m["role"], m["content"]) for m in messages[:end + 1]]


def first_sentence(text: str) -> str | None:
    """The first sentence of ``text``, or None where that would not shorten it."""
    body = text.strip()
    m = SENTENCE_END.search(body)
    if m is None:
        return None
    cut = body[:m.end()].strip()
    return cut if any(c.isalnum() for c in cut) and len(cut) < len(body) else None


def parse_depths(text: str | Iterable[Any]) -> list[int]:
    """``"0,1,2"`` (or a list) as sorted distinct depths; a ValueError names a bad one."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    depths = set()
    for part in parts:
        s = str(part).strip()
        if not s:
            continue
        if not s.isdigit():
            raise ValueError(f"depth {s!r} is not a whole number >= 0")
        depths.add(int(s))
    if not depths:
        raise ValueError("no depths given")
    return sorted(depths)


def parse_kinds(text: str | Iterable[Any]) -> list[str]:
    parts = text.split(",") if isinstance(text, str) else list(text)
    kinds = [str(k).strip() for k in parts if str(k).strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"defect kinds {unknown or 'none'}: choose from {', '.join(KINDS)}")
    return [k for k in KINDS if k in kinds]  # the canonical order, each once


class _Donors:
    """Assistant answers by turn number, for the off-topic defect."""

    def __init__(self, answers: list[list[str]]):
        self.by_turn: dict[int, list[tuple[int, str]]] = {}
        for conv, texts in enumerate(answers):
            for turn, text in enumerate(texts):
                self.by_turn.setdefault(turn, []).append((conv, text))
        self.turns = sorted(self.by_turn)

    def pick(self, conv: int, turn: int, original: str, rng: random.Random) -> str | None:
        ok = lambda c: c[0] != conv and c[1].strip() != original.strip() and c[1].strip()  # noqa: E731
        for t in sorted(self.turns, key=lambda t: (abs(t - turn), t)):  # the same turn, then the nearest
            pool = self.by_turn[t]
            for _ in range(8):  # a few draws first: the full filter is only for crowded pools
                cand = pool[rng.randrange(len(pool))]
                if ok(cand):
                    return cand[1]
            fits = [c for c in pool if ok(c)]
            if fits:
                return rng.choice(fits)[1]
        return None


def build_pairs(conversations: Sequence[Conversation], depths: Sequence[int] = DEFAULT_DEPTHS,
                kinds: Sequence[str] = KINDS, seed: int = 0, source: str = "depth") -> Built:
    """One pair per conversation, depth and kind where the defect applies (see the module)."""
    convs: list[tuple[Conversation, list[Message], list[int]]] = []
    built = Built([], len(conversations), 0)
    seen_ids: set[str] = set()
    for c in conversations:
        msgs = answered(c.messages)
        turns = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
        if not turns:
            built.left_out["conversation with no assistant answer"] += 1
        elif c.id in seen_ids:
            built.left_out["duplicate conversation (same id)"] += 1
        else:
            seen_ids.add(c.id)
            convs.append((c, msgs, turns))
    donors = _Donors([[msgs[i]["content"] for i in turns] for _, msgs, turns in convs])
    used = set()
    for n, (conv, msgs, turns) in enumerate(convs):
        for d in depths:
            if d >= len(turns):
                built.left_out[f"d={d}: fewer than {d + 1} answers"] += 1
                continue
            turn = len(turns) - 1 - d  # 0-based assistant turn number
            index = turns[turn]
            original = msgs[index]["content"]
            for kind in kinds:
                rng = random.Random(f"{seed}|{conv.id}|{d}|{kind}")  # str seeds hash the same in every process
                if kind == "off-topic":
                    text = donors.pick(n, turn, original, rng)
                elif kind == "repeat":
                    text = msgs[turns[turn - 1]]["content"] if turn > 0 else None
                else:
                    text = first_sentence(original)
                if text is None or text.strip() == original.strip():
                    built.left_out[f"{kind}: does not apply"] += 1
                    continue
                rejected = list(msgs)
                rejected[index] = message("assistant", text)
                built.pairs.append(PreferencePair(
                    id=f"{conv.id}/d{d}/{kind}", chosen=msgs, rejected=rejected,
                    source=source, meta={"source_id": conv.id, "depth": d, "num_turns": len(turns),
                                         "defect": kind, "message_index": index}))
                used.add(conv.id)
    built.used = len(used)
    return built


def divergence(pair: PreferencePair) -> tuple[int, int, int]:
    """(index of the one changed message, its depth, assistant turns) of a depth pair; a
    ValueError says why the pair is not one (the sides differ in length, in no message, in more
    than one, or in a message that is not an answer)."""
    if len(pair.chosen) != len(pair.rejected):
        raise ValueError(f"the sides differ in length ({len(pair.chosen)} vs {len(pair.rejected)} messages)")
    changed = [i for i, (c, r) in enumerate(zip(pair.chosen, pair.rejected)) if c != r]
    if len(changed) != 1:
        raise ValueError(f"the sides differ in {len(changed)} messages; a depth pair differs in exactly one")
    index = changed[0]
    if pair.chosen[index]["role"] != "assistant" or pair.rejected[index]["role"] != "assistant":
        raise ValueError(f"message {index} differs but is not an assistant answer on both sides")
    turns = [i for i, m in enumerate(pair.chosen) if m["role"] == "assistant"]
    return index, sum(1 for i in turns if i > index), len(turns)
