"""A loopback server that speaks Anthropic's Messages REST API.

Magic words in the last user message: ``[[safety]]`` (stop_reason refusal), ``[[empty]]``."""

from __future__ import annotations

import functools
from collections.abc import Callable

from music_core.testing import FaultPlan, LoopbackServer, Request, Response


def echo(messages: list[dict], index: int) -> str:
    return f"echo[{index}]: {messages[-1]['content'] if messages else ''}"


def handle(req: Request, reply: Callable[[list[dict], int], str] = echo, seen: dict | None = None) -> Response:
    if not req.path.endswith("/v1/messages"):
        return Response(404, {"type": "error", "error": {"type": "not_found_error", "message": req.path}})
    if not (req.headers.get("x-api-key") or req.headers.get("authorization", "").removeprefix("Bearer ").strip()):
        return Response(401, {"type": "error", "error": {"type": "authentication_error", "message": "no key"}})
    body = req.json()
    if body.get("model") == "missing-model":
        return Response(404, {"type": "error", "error": {"type": "not_found_error", "message": "model: missing-model"}})
    if body.get("model") == "bad-model":
        return Response(400, {"type": "error", "error": {"type": "invalid_request_error", "message": "bad model"}})
    last = body["messages"][-1]["content"] if body.get("messages") else ""
    if "[[bad-request]]" in last:
        return Response(400, {"type": "error", "error": {"type": "invalid_request_error", "message": "prompt refused"}})
    if "[[safety]]" in last:
        content, stop = [], "refusal"
    elif "[[empty]]" in last:
        content, stop = [{"type": "text", "text": ""}], "end_turn"
    else:
        system = body.get("system")
        msgs = ([{"role": "system", "content": system}] if isinstance(system, str) and system else []) + body["messages"]
        # The Messages API samples afresh on every call; the k-th identical request gets sample k.
        seen = {} if seen is None else seen
        k = seen.get(req.body, 0)
        seen[req.body] = k + 1
        content, stop = [{"type": "text", "text": reply(msgs, k)}], "end_turn"
    return Response(200, {"id": "msg_fake", "type": "message", "role": "assistant", "model": body["model"],
                          "content": content, "stop_reason": stop, "stop_sequence": None,
                          "usage": {"input_tokens": len(last) // 4 + 1, "output_tokens": 5}})


def anthropic_server(latency_s: float = 0.0, faults: FaultPlan | None = None,
                     reply: Callable[[list[dict], int], str] = echo) -> LoopbackServer:
    """``with anthropic_server() as srv:`` then ``base_url=srv.url``."""
    return LoopbackServer(functools.partial(handle, reply=reply, seen={}), latency_s=latency_s, faults=faults)
