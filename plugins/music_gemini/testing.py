"""A loopback server that speaks the Gemini API's generateContent REST method.

Magic words in the last user message: ``[[safety]]`` (promptFeedback.blockReason),
``[[safety-candidate]]`` (finishReason SAFETY), ``[[empty]]`` (no candidates)."""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable

from music_core.testing import FaultPlan, LoopbackServer, Request, Response
from music_core.testing.batch import BatchJobs, Job


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


STATES = {"running": "BATCH_STATE_RUNNING", "completed": "BATCH_STATE_SUCCEEDED", "expired": "BATCH_STATE_EXPIRED",
          "cancelled": "BATCH_STATE_CANCELLED", "failed": "BATCH_STATE_FAILED"}


def handle_batch(req: Request, jobs: BatchJobs, online: Callable[[Request], Response]) -> Response:
    """The Gemini API's batch mode with inlined requests: batchGenerateContent, get, cancel."""
    path = req.path.rstrip("/")
    if ":batchGenerateContent" not in path and "/batches" not in path:
        return online(req)
    if not req.headers.get("x-goog-api-key"):
        return Response(401, {"error": {"code": 401, "message": "API key missing", "status": "UNAUTHENTICATED"}})
    if ":batchGenerateContent" in path:
        model = path.split("/models/")[1].split(":")[0]
        if model == "missing-model":
            return Response(404, {"error": {"code": 404, "message": "model not found", "status": "NOT_FOUND"}})
        batch = req.json().get("batch") or {}
        reqs = ((batch.get("inputConfig") or {}).get("requests") or {}).get("requests") or []
        job = jobs.create([((r.get("metadata") or {}).get("key", ""), {**r["request"], "_model": model}) for r in reqs],
                          model=model, label=batch.get("displayName", ""))
        return jobs.created(job, Response(200, _operation(job)))
    if path.endswith("/batches"):
        return Response(200, {"operations": [_operation(j) for j in jobs.newest_first()]})
    name = path.split("/batches/")[1]
    found = jobs.cancel(name.removesuffix(":cancel")) if name.endswith(":cancel") else jobs.get(name)
    if found is None:
        return Response(404, {"error": {"code": 404, "message": f"no batch {name}", "status": "NOT_FOUND"}})
    return Response(200, {} if name.endswith(":cancel") else _operation(found))


def _operation(job: Job) -> dict:
    def iso(t: float | None) -> str | None:
        return dt.datetime.fromtimestamp(t, dt.UTC).isoformat().replace("+00:00", "Z") if t else None

    meta: dict = {"@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
                  "name": f"batches/{job.id}", "model": f"models/{job.model}", "state": STATES[job.state],
                  "displayName": job.label,
                  "createTime": iso(job.created), "updateTime": iso(job.ended or job.created)}
    if job.state != "running":
        meta["endTime"] = iso(job.ended)
        out = []
        for cid, _ in job.items:
            if cid not in job.results:
                continue  # never ran (expired or cancelled)
            status, body = job.results[cid]
            if status == 200:
                out.append({"response": body, "metadata": {"key": cid}})
            else:
                err = (body or {}).get("error") or {}
                out.append({"error": {"code": status, "message": err.get("message", "failed")}, "metadata": {"key": cid}})
        meta["output"] = {"inlinedResponses": {"inlinedResponses": out}}
    return {"name": f"batches/{job.id}", "metadata": meta, "done": job.state != "running"}


def online_answer(online: Callable[[Request], Response]) -> Callable[[dict], tuple[int, object]]:
    """A batch item answered exactly as generateContent answers the same request."""
    def answer(request: dict) -> tuple[int, object]:
        body = {k: v for k, v in request.items() if k not in ("_model", "model")}
        r = online(Request("POST", f"/v1beta/models/{request.get('_model', 'm')}:generateContent", "",
                           {"x-goog-api-key": "batch"}, json.dumps(body).encode()))
        return r.status, r.body
    return answer


def gemini_server(latency_s: float = 0.0, faults: FaultPlan | None = None,
                  reply: Callable[[list[dict], int], str] = echo, seeded: bool = False,
                  batch: dict | None = None) -> LoopbackServer:
    """``with gemini_server() as srv:`` then ``base_url=srv.url``. Batch mode is served too:
    ``batch`` holds :class:`~music_core.testing.batch.BatchJobs` options; ``srv.batch_jobs``."""
    online = functools.partial(handle, reply=reply, seen={}, seeded=seeded)
    jobs = BatchJobs(online_answer(online), **(batch or {}))
    srv = LoopbackServer(functools.partial(handle_batch, jobs=jobs, online=online), latency_s=latency_s, faults=faults)
    srv.batch_jobs = jobs  # type: ignore[attr-defined]
    return srv
