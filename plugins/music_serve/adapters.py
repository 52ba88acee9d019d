"""Reward functions for RL trainers, backed by ``music serve`` (or a scorer in this process).

TRL::

    from music_serve.adapters import trl_reward
    trainer = GRPOTrainer(model=..., reward_funcs=trl_reward("http://127.0.0.1:8000"), ...)

verl (``custom_reward_function.path`` pointing at this module, ``name: compute_score``; the server
from ``MUSIC_REWARD_URL``)::

    compute_score(data_source, solution_str, ground_truth, extra_info) -> float
"""

from __future__ import annotations

import json
import os
import urllib.request
from typing import Any


def _post(url: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def _as_messages(prompt: Any, completion: Any) -> list[dict[str, str]]:
    """TRL's conversational prompt and completion (message lists), or standard strings."""
    p = prompt if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]
    c = completion if isinstance(completion, list) else [{"role": "assistant", "content": str(completion)}]
    return [{"role": m["role"], "content": m["content"]} for m in [*p, *c]]


def trl_reward(url: str | None = None, *, scorer: Any = None, model: str | None = None, timeout: float = 120.0):
    """A ``reward_funcs`` entry for TRL's GRPOTrainer: the whole conversation (prompt messages,
    then the completion) scored by the server at ``url`` or by a local ``scorer``."""
    if (url is None) == (scorer is None):
        raise ValueError("give the server's url or a scorer, one of them")

    def music_reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        convs = [_as_messages(p, c) for p, c in zip(prompts, completions)]
        if scorer is not None:
            return [float(x) for x in scorer.score(convs)]
        body: dict[str, Any] = {"conversations": convs}
        if model:
            body["model"] = model
        return [float(x) for x in _post(url.rstrip("/") + "/v1/rewards", body, timeout)["rewards"]]  # type: ignore[union-attr]

    music_reward.__name__ = "music_reward"  # TRL logs each reward function under its name
    return music_reward


def compute_score(data_source: Any, solution_str: str, ground_truth: Any = None, extra_info: Any = None) -> float:
    """verl's custom reward function: the response (with its prompt, where verl passes it in
    ``extra_info["prompt"]``) scored by the server at ``$MUSIC_REWARD_URL``."""
    url = os.environ.get("MUSIC_REWARD_URL", "http://127.0.0.1:8000")
    prompt = (extra_info or {}).get("prompt") if isinstance(extra_info, dict) else None
    conv = _as_messages(prompt if prompt is not None else "", solution_str)
    if not conv[0]["content"]:
        conv = [{"role": "user", "content": "(no prompt)"}, conv[-1]]
    return float(_post(url.rstrip("/") + "/v1/rewards", {"conversations": [conv]}, 120.0)["rewards"][0])
