"""Checks every simulated user turn passes: it is not the end signal in disguise, not a copy of
an earlier message (n-gram overlap, so a copied sentence inside a longer turn is caught), and
not the assistant talking. Each refusal has a short reason; the synthesis report counts them."""

from __future__ import annotations

from music_core.data import Message
from music_core.synth.text import assistant_voice, copied_share, first_sentences, strip_label

LABELS = ("User:", "Me:", "You:", "Reply:", "Next message:", "->")


def check_user_turn(text: str, history: list[Message], *, end_token: str, min_chars: int, max_chars: int | None,
                    max_sentences: int | None, max_copied_share: float) -> tuple[str, str]:
    """``('end' | 'ok' | 'bad', cleaned text or the reason it is bad)``."""
    if end_token.lower() in text.lower()[: len(end_token) + 8] or text.strip().lower() in ("end", end_token.lower()):
        return "end", ""
    text = strip_label(text, LABELS)
    text = first_sentences(text, max_sentences) if max_sentences else " ".join(text.split())
    if len(text) < min_chars:
        return "bad", "too short"
    if max_chars is not None and len(text) > max_chars:
        return "bad", "too long"
    voice = assistant_voice(text)
    if voice:
        return "bad", "assistant voice"
    earlier = [m["content"] for m in history if m["role"] in ("user", "assistant")]
    if copied_share(text, earlier) > max_copied_share:
        return "bad", "copies an earlier message"
    return "ok", text
