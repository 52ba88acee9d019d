"""A loopback server that speaks Anthropic's Messages REST API.

Magic words in the last user message: ``[[safety]]`` (stop_reason refusal), ``[[empty]]``."""

from __future__ import annotations

from music_core.testing import FaultPlan, LoopbackServer, Request, Response


def handle(req: Request) -> Response:
    if not req.path.endswith("/v1/messages"):
        return Response(404, {"type": "error", "error": {"type": "not_found_error", "message": req.path}})
    if not (req.headers.get("x-api-key") or req.headers.get("authorization", "").removeprefix("Bearer ").strip()):
        return Response(401, {"type": "error", "error": {"type": "authentication_error", "message": "no key"}})
    body = req.json()
    if body.get("model") == "bad-model":
        return Response(400, {"type": "error", "error": {"type": "invalid_request_error", "message": "bad model"}})
    last = body["messages"][-1]["content"] if body.get("messages") else ""
    if "[[safety]]" in last:
        content, stop = [], "refusal"
    elif "[[empty]]" in last:
        content, stop = [{"type": "text", "text": ""}], "end_turn"
    else:
        content, stop = [{"type": "text", "text": f"echo: {last}"}], "end_turn"
    return Response(200, {"id": "msg_fake", "type": "message", "role": "assistant", "model": body["model"],
                          "content": content, "stop_reason": stop, "stop_sequence": None,
                          "usage": {"input_tokens": len(last) // 4 + 1, "output_tokens": 5}})


def anthropic_server(latency_s: float = 0.0, faults: FaultPlan | None = None) -> LoopbackServer:
    """``with anthropic_server() as srv:`` then ``base_url=srv.url``."""
    return LoopbackServer(handle, latency_s=latency_s, faults=faults)
