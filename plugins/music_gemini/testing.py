"""A loopback server that speaks the Gemini API's generateContent REST method.

Magic words in the last user message: ``[[safety]]`` (promptFeedback.blockReason),
``[[safety-candidate]]`` (finishReason SAFETY), ``[[empty]]`` (no candidates)."""

from __future__ import annotations

from music_core.testing import FaultPlan, LoopbackServer, Request, Response


def handle(req: Request) -> Response:
    if ":generateContent" not in req.path:
        return Response(404, {"error": {"code": 404, "message": req.path, "status": "NOT_FOUND"}})
    if not req.headers.get("x-goog-api-key") and "/projects/" not in req.path:
        return Response(401, {"error": {"code": 401, "message": "API key missing", "status": "UNAUTHENTICATED"}})
    if "/models/bad-model:" in req.path:
        return Response(400, {"error": {"code": 400, "message": "model not found", "status": "INVALID_ARGUMENT"}})
    body = req.json()
    contents = body.get("contents") or []
    last = "".join(p.get("text", "") for p in contents[-1]["parts"]) if contents else ""
    n = int((body.get("generationConfig") or {}).get("candidateCount") or 1)
    usage = {"promptTokenCount": len(last) // 4 + 1, "candidatesTokenCount": 5 * n, "totalTokenCount": len(last) // 4 + 1 + 5 * n}
    if "[[safety]]" in last:
        return Response(200, {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": usage})
    if "[[empty]]" in last:
        return Response(200, {"candidates": [], "usageMetadata": usage})
    finish = "SAFETY" if "[[safety-candidate]]" in last else "STOP"
    cands = [{"index": i, "finishReason": finish,
              "content": {"role": "model", "parts": [{"text": f"echo[{i}]: {last}"}]}} for i in range(n)]
    return Response(200, {"candidates": cands, "usageMetadata": usage, "modelVersion": "fake"})


def gemini_server(latency_s: float = 0.0, faults: FaultPlan | None = None) -> LoopbackServer:
    """``with gemini_server() as srv:`` then ``base_url=srv.url``."""
    return LoopbackServer(handle, latency_s=latency_s, faults=faults)
