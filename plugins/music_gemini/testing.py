"""A loopback server that speaks the Gemini API's generateContent REST method.

Magic words in the last user message: ``[[safety]]`` (promptFeedback.blockReason),
``[[safety-candidate]]`` (finishReason SAFETY), ``[[empty]]`` (no candidates)."""

from __future__ import annotations

import functools
from collections.abc import Callable

from music_core.testing import FaultPlan, LoopbackServer, Request, Response


def echo(messages: list[dict], index: int) -> str:
    return f"echo[{index}]: {messages[-1]['content'] if messages else ''}"


def handle(req: Request, reply: Callable[[list[dict], int], str] = echo, seen: dict | None = None,
           seeded: bool = False) -> Response:
    if ":generateContent" not in req.path:
        return Response(404, {"error": {"code": 404, "message": req.path, "status": "NOT_FOUND"}})
    if not req.headers.get("x-goog-api-key") and "/projects/" not in req.path:
        return Response(401, {"error": {"code": 401, "message": "API key missing", "status": "UNAUTHENTICATED"}})
    if "/models/missing-model:" in req.path:
        return Response(404, {"error": {"code": 404, "message": "model not found", "status": "NOT_FOUND"}})
    if "/models/bad-model:" in req.path:
        return Response(400, {"error": {"code": 400, "message": "model not found", "status": "INVALID_ARGUMENT"}})
    body = req.json()
    contents = body.get("contents") or []
    last = "".join(p.get("text", "") for p in contents[-1]["parts"]) if contents else ""
    n = int((body.get("generationConfig") or {}).get("candidateCount") or 1)
    usage = {"promptTokenCount": len(last) // 4 + 1, "candidatesTokenCount": 5 * n, "totalTokenCount": len(last) // 4 + 1 + 5 * n}
    if "[[bad-request]]" in last:
        return Response(400, {"error": {"code": 400, "message": "prompt refused", "status": "INVALID_ARGUMENT"}})
    if "[[safety]]" in last:
        return Response(200, {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": usage})
    if "[[empty]]" in last:
        return Response(200, {"candidates": [], "usageMetadata": usage})
    finish = "SAFETY" if "[[safety-candidate]]" in last else "STOP"
    system = "".join(p.get("text", "") for p in ((body.get("systemInstruction") or {}).get("parts") or []))
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "assistant" if c.get("role") == "model" else "user", "content": "".join(p.get("text", "") for p in c["parts"])}
        for c in contents]
    seen = {} if seen is None else seen
    k = seen.get(req.body, 0)
    seed = int((body.get("generationConfig") or {}).get("seed") or 0)
    # A seeded (or temperature-0) server: the same body, seed included, gives the same answer.
    # Otherwise the seed and the repeat count both change it, as on a real sampling server.
    k = seed if seeded else k + 1009 * seed  # generateContent samples afresh on every call: the k-th repeat gets new ones
    seen[req.body] = k + 1
    cands = [{"index": i, "finishReason": finish,
              "content": {"role": "model", "parts": [{"text": reply(msgs, k * n + i)}]}} for i in range(n)]
    return Response(200, {"candidates": cands, "usageMetadata": usage, "modelVersion": "fake"})


def gemini_server(latency_s: float = 0.0, faults: FaultPlan | None = None,
                  reply: Callable[[list[dict], int], str] = echo, seeded: bool = False) -> LoopbackServer:
    """``with gemini_server() as srv:`` then ``base_url=srv.url``."""
    return LoopbackServer(functools.partial(handle, reply=reply, seen={}, seeded=seeded), latency_s=latency_s, faults=faults)
