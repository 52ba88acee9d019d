"""Small text checks shared by simulators and contrast strategies: what makes a generated turn
usable, judged without another model."""

from __future__ import annotations

import difflib
import re

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
