"""A deterministic stand-in for an LLM that plays every synthesis role sensibly, so that
loopback servers can drive real rollouts quickly."""

from __future__ import annotations

import hashlib
import json
import re

FOLLOW_UPS = [
    "Can you make it shorter?", "Please add a concrete example.", "What would change if I had no budget at all?",
    "Could you turn that into a numbered list?", "Why is that the best option for me?",
    "Now explain it for a complete beginner.", "What are the main risks here?", "How long would all of this take?",
]


def scripted_reply(messages: list[dict], index: int) -> str:
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    last = messages[-1]["content"] if messages else ""
    digest = int(hashlib.sha1(json.dumps(messages, sort_keys=True).encode()).hexdigest(), 16)
    if "getting help from an AI" in system or "simulating the human user" in system:  # user simulators
        return FOLLOW_UPS[(digest + index) % len(FOLLOW_UPS)]
    if "impartial judge" in system:  # the pairwise judge: prefers the longer conversation, in either order
        la, lb = judged_lengths(last)
        winner = "A" if la > lb else "B" if lb > la else "tie"
        if "Answer with one letter" in system:  # the label template: the letter alone
            return "A" if winner == "tie" else winner
        return json.dumps({"reasons": f"{la} vs {lb} characters", "winner": winner})
    if "rewrite a user's instruction" in system or "Rewrite that instruction" in system:  # the rewriters
        m = (re.search(r"Original instruction: (.*)\nModified instruction:", last, re.S)
             or re.search(r"The user's latest instruction:\n(.*)\n\nModified instruction:", last, re.S))
        original = m.group(1).strip() if m else last
        return f"{original.rstrip('.?!')}, but only for experts."
    # candidates differ in length by sample index, so a length-loving RM has something to pick
    return f"Answer {digest % 10_000}-{index}: a careful reply to '{last[:60]}'." + " More detail." * (index % 4)


def judged_lengths(prompt: str) -> tuple[int, int]:
    a = re.search(r"\[Conversation A\]\n(.*?)\n\n\[Conversation B\]", prompt, re.S)
    b = re.search(r"\[Conversation B\]\n(.*?)\n\nWhich conversation", prompt, re.S)
    return (len(a.group(1)) if a else 0), (len(b.group(1)) if b else 0)


def scripted_logprobs(messages: list[dict], index: int, text: str) -> list[dict[str, float]]:
    """A judge's label probabilities: sure of the longer conversation, undecided between equals."""
    la, lb = judged_lengths(messages[-1]["content"])
    if la == lb:
        return [{" A": -0.7, " B": -0.7, "The": -4.0}]
    win, lose = ("A", "B") if la > lb else ("B", "A")
    return [{win: -0.1, lose: -2.4, "Conversation": -5.0}]


def synth_overrides(tmp_path, base_url: str, provider: str, key_env: str, model: str = "fake-model") -> list[str]:
    return [f"run.output_dir={tmp_path}", "run.progress=false",
            f"models.sim.provider={provider}", f"models.sim.model={model}", f"models.sim.base_url={base_url}",
            f"models.sim.api_key_env={key_env}", "models.sim.retry_backoff_s=0.01", "models.sim.max_tokens=64",
            "roles.user_simulator=sim", "roles.assistant_simulator=sim", "roles.contrast=sim",
            "roles.policy=sim", "roles.judge=sim"]
