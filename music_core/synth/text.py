"""Small text checks shared by simulators and contrast strategies: what makes a generated turn
usable, judged without another model."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any

ASSISTANT_OPENERS = ("sure", "certainly", "of course", "here is", "here's", "as an ai", "i'd be happy",
                     "i would be happy", "great question", "absolutely", "i'm happy to", "i am happy to",
                     "happy to help", "no problem", "thank you for", "thanks for asking")


def normalize(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


def similarity(a: str, b: str) -> float:
    """0..1, word level: how much two texts say the same thing in the same words."""
    return difflib.SequenceMatcher(None, normalize(a).split(), normalize(b).split()).ratio()


def sounds_like_assistant(text: str) -> bool:
    return normalize(text).startswith(ASSISTANT_OPENERS)


def first_sentences(text: str, n: int) -> str:
    """The first ``n`` sentences (a question mark ends one too), on one line."""
    text = " ".join(text.split())
    parts = re.split(r"(?<=[.!?])\s+", text)
    return " ".join(parts[:n]).strip()


def strip_label(text: str, labels: tuple[str, ...]) -> str:
    """Drop a leading ``Label:`` a model adds (``Modified:``, ``User:``) and wrapping quotes."""
    text = text.strip()
    for label in labels:
        if text.lower().startswith(label.lower()):
            text = text[len(label):].lstrip(" :-")
    return text.strip().strip('"').strip("'").strip()


# Phrases an assistant says and a user does not, wherever they stand in the text.
ASSISTANT_PHRASES = re.compile(
    r"\b(how (can|may) i (help|assist)|is there anything else (i|you)|i('m| am) here to help|i hope (this|that) helps"
    r"|if you have any (other |more |further )?questions|dedicated (chat ?bot|assistant|team)"
    r"|as an ai\b|i('m| am) an ai\b|feel free to (ask|reach out)|happy to help|glad i could help"
    r"|you('re| are) welcome\b|i can help you with|here are (some|a few)\b)", re.I)


def assistant_voice(text: str) -> str | None:
    """Why a would-be user turn reads as the assistant speaking (None if it does not)."""
    if sounds_like_assistant(text):
        return "opens like an assistant answer"
    m = ASSISTANT_PHRASES.search(text)
    return f"assistant phrase {m.group(0)!r}" if m else None


def _grams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def copied_share(text: str, earlier: list[str], n: int = 4) -> float:
    """The largest share of ``text``'s word n-grams found in any one earlier message: 1.0 for a
    copy, high for a copy with a few words changed or a copied sentence inside a longer turn
    (which whole-string similarity misses when the earlier message is long)."""
    words = normalize(text).split()
    if not words:
        return 0.0
    n = min(n, len(words))
    mine = _grams(words, n)
    best = 0.0
    for e in earlier:
        theirs = _grams(normalize(e).split(), n)
        if theirs:
            best = max(best, len(mine & theirs) / len(mine))
    return best


def transcript(history: Sequence[Mapping[str, Any]], message_chars: int | None = None) -> str:
    """A conversation as ``User: ...`` / ``Assistant: ...`` paragraphs, each message cut to
    ``message_chars`` when given (the paper profile shows it whole)."""
    names = {"user": "User", "assistant": "Assistant", "system": "System"}
    out = []
    for m in history:
        text = m["content"]
        if message_chars is not None and len(text) > message_chars:
            text = text[:message_chars] + " ..."
        out.append(f"{names.get(m['role'], m['role'])}: {text}")
    return "\n\n".join(out)
