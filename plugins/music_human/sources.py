"""The four datasets' rows, each read in its own schema (from the dataset cards)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from music_core.data import Message
from music_core.records import UnusableRecord

from .schema import Comparison, messages_of, user_turns, valid, winner_of


def _context(raw: Any, column: str) -> list[Message]:
    """A context given as messages, or as one string (the single user turn)."""
    return [{"role": "user", "content": raw}] if isinstance(raw, str) else messages_of(raw, column)


def _sides(context: list[Message], first: Any, second: Any) -> tuple[list, list]:
    """The context followed by each answer. An empty answer is what a model said and people
    judged: it is scored (an RM should rank it low), never dropped."""
    if not context or context[-1]["role"] != "user":
        raise UnusableRecord("role_order", "the context must end with a user turn")
    if not isinstance(first, str) or not isinstance(second, str):
        raise UnusableRecord("invalid", "the responses must be strings")
    a = valid(context + [{"role": "assistant", "content": first}], "response A")
    b = valid(context + [{"role": "assistant", "content": second}], "response B")
    return a, b


def helpsteer3(rec: dict[str, Any], i: int, section: Any, dropped: Counter[str]) -> Comparison | None:
    """nvidia/HelpSteer3 (preference): ``context`` (messages or a string), ``response1``,
    ``response2``, ``overall_preference`` from -3 (response1 much better) to +3."""
    context = _context(rec["context"], "context")
    pref = int(rec["overall_preference"])
    if not -3 <= pref <= 3:
        raise ValueError(f"overall_preference {pref} is outside -3..3")
    if pref == 0:
        dropped["no preference (overall_preference 0)"] += 1  # chosen = rejected could never score
        return None
    if abs(pref) < section.min_abs_preference:
        dropped[f"|overall_preference| below eval.helpsteer3.min_abs_preference ({section.min_abs_preference})"] += 1
        return None
    sides = _sides(context, rec["response1"], rec["response2"])
    return Comparison(str(rec.get("id") or i), sides[0], sides[1], "a" if pref < 0 else "b", user_turns(context),
                      rec.get("language"), str(pref), {"domain": rec.get("domain")})


def judge_name(judge: Any) -> str | None:
    """FastChat's names for MT-Bench judges: expert_* votes are the humans', author_* the authors'."""
    if isinstance(judge, (list, tuple)) and len(judge) >= 2 and judge[0] == "gpt-4" and str(judge[1]).startswith("pair"):
        return "gpt4-pair"
    if isinstance(judge, str) and judge.startswith("expert"):
        return "human"
    if isinstance(judge, str) and judge.startswith("author"):
        return "author"
    return None


def mt_bench(rec: dict[str, Any], i: int, section: Any, dropped: Counter[str]) -> Comparison | None:
    """lmsys/mt_bench_human_judgments: ``conversation_a/b`` are whole 4-message transcripts; a
    vote on ``turn`` 1 or 2 judges the conversations cut after that turn."""
    if judge_name(rec["judge"]) != section.reference_judge:
        dropped[f"judge is not {section.reference_judge}"] += 1
        return None
    turn = int(rec["turn"])
    if turn not in (1, 2):
        raise ValueError(f"turn {turn} (MT-Bench has turns 1 and 2)")
    a = valid(messages_of(rec["conversation_a"], "conversation_a")[: 2 * turn], "conversation_a")
    b = valid(messages_of(rec["conversation_b"], "conversation_b")[: 2 * turn], "conversation_b")
    winner = winner_of(rec["winner"])
    model_a, model_b = str(rec["model_a"]), str(rec["model_b"])
    flip = not model_a < model_b  # FastChat keys a vote by the models in sorted order
    key = [rec["question_id"], *sorted((model_a, model_b))] if flip else [rec["question_id"], model_a, model_b]
    return Comparison(f"{rec['question_id']}:{model_a}:{model_b}:{turn}:{i}", a, b, winner, turn, None,
                      str(rec["winner"]), {"turn": turn, "key": key, "flip": flip})


def arena(rec: dict[str, Any], i: int, section: Any, dropped: Counter[str]) -> Comparison | None:
    """lmsys/chatbot_arena_conversations and lmarena-ai/arena-human-preference-*: whole
    conversations (messages, messages JSON-encoded in a string, or content as typed parts) and
    a winner: model_a, model_b, tie, tie (bothbad), both_bad."""
    a = valid(messages_of(rec["conversation_a"], "conversation_a"), "conversation_a")
    b = valid(messages_of(rec["conversation_b"], "conversation_b"), "conversation_b")
    turns = int(rec["turn"]) if rec.get("turn") else user_turns(a)
    rid = rec.get("question_id") or rec.get("id") or i
    return Comparison(str(rid), a, b, winner_of(rec["winner"]), turns, rec.get("language"), str(rec["winner"]))


def ppe(rec: dict[str, Any], i: int, section: Any, dropped: Counter[str]) -> Comparison | None:
    """lmarena-ai/PPE-Human-Preference-V1: ``prompt`` (earlier turns included where there were
    any), ``response_1`` (model_a's), ``response_2``; ``conv_metadata.turns`` counts the turns."""
    context = _context(rec["prompt"], "prompt")
    sides = _sides(context, rec["response_1"], rec["response_2"])
    meta: dict[str, Any] = rec["conv_metadata"] if isinstance(rec.get("conv_metadata"), dict) else {}
    turns = int(meta.get("turns") or user_turns(context))
    return Comparison(str(rec.get("question_id") or i), sides[0], sides[1], winner_of(rec["winner"]), turns,
                      rec.get("language"), str(rec["winner"]))
