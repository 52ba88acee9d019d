"""A loopback server that speaks Anthropic's Messages REST API.

Magic words in the last user message: ``[[safety]]`` (stop_reason refusal), ``[[empty]]``."""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable

from music_core.testing import FaultPlan, LoopbackServer, Request, Response
from music_core.testing.batch import BatchJobs, Job


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


def handle_batch(req: Request, jobs: BatchJobs, online: Callable[[Request], Response]) -> Response:
    """Message Batches: create, retrieve, cancel, and the results JSONL at ``results_url``."""
    path = req.path.rstrip("/")
    if "/v1/messages/batches" not in path:
        return online(req)
    if not (req.headers.get("x-api-key") or req.headers.get("authorization", "").removeprefix("Bearer ").strip()):
        return Response(401, {"type": "error", "error": {"type": "authentication_error", "message": "no key"}})
    base = f"http://{req.headers.get('host', '127.0.0.1')}"
    if req.method == "POST" and path.endswith("/v1/messages/batches"):
        requests = req.json().get("requests") or []
        models = {r["params"].get("model") for r in requests}
        if "missing-model" in models:
            return Response(404, {"type": "error", "error": {"type": "not_found_error", "message": "model: missing-model"}})
        made = jobs.create([(r["custom_id"], r["params"]) for r in requests])
        return jobs.created(made, Response(200, _batch_object(made, jobs, base)))
    if req.method == "GET" and path.endswith("/v1/messages/batches"):
        data = [_batch_object(j, jobs, base) for j in jobs.newest_first()]
        return Response(200, {"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
                              "last_id": data[-1]["id"] if data else None})
    job_id = path.split("/v1/messages/batches/")[1].split("/")[0]
    if path.endswith("/results"):
        done = jobs.get(job_id)
        if done is None or done.state == "running":
            return Response(404, {"type": "error", "error": {"type": "not_found_error", "message": "no results yet"}})
        lines = []
        for cid, _ in done.items:
            if cid not in done.results:
                result: dict = {"type": "expired" if done.state == "expired" else "canceled"}
            elif done.results[cid][0] == 200:
                result = {"type": "succeeded", "message": done.results[cid][1]}
            else:
                err = (done.results[cid][1] or {}).get("error") or {}
                result = {"type": "errored", "error": {"type": "error", "error": {
                    "type": "invalid_request_error" if done.results[cid][0] == 400 else "api_error",
                    "message": err.get("message", "failed")}}}
            lines.append(json.dumps({"custom_id": cid, "result": result}))
        return Response(200, ("\n".join(lines) + "\n").encode(), {"content-type": "application/binary"})
    job = jobs.cancel(job_id) if path.endswith("/cancel") else jobs.get(job_id)
    if job is None:
        return Response(404, {"type": "error", "error": {"type": "not_found_error", "message": f"no batch {job_id}"}})
    return Response(200, _batch_object(job, jobs, base))


def _batch_object(job: Job, jobs: BatchJobs, base: str) -> dict:
    def iso(t: float | None) -> str | None:
        return dt.datetime.fromtimestamp(t, dt.UTC).isoformat() if t else None

    ended = job.state != "running"
    ok = sum(1 for s, _ in job.results.values() if s == 200)
    unrun = len(job.items) - len(job.results)
    return {"id": job.id, "type": "message_batch", "processing_status": "ended" if ended else "in_progress",
            "request_counts": {"processing": 0 if ended else len(job.items), "succeeded": ok,
                               "errored": len(job.results) - ok, "canceled": unrun if job.state == "cancelled" else 0,
                               "expired": unrun if job.state == "expired" else 0},
            "created_at": iso(job.created), "expires_at": iso(job.created + 86400), "ended_at": iso(job.ended),
            "cancel_initiated_at": iso(job.ended) if job.state == "cancelled" else None, "archived_at": None,
            "results_url": f"{base}/v1/messages/batches/{job.id}/results" if ended else None}


def online_answer(online: Callable[[Request], Response]) -> Callable[[dict], tuple[int, object]]:
    """A batch item answered exactly as the Messages route answers the same params."""
    def answer(params: dict) -> tuple[int, object]:
        r = online(Request("POST", "/v1/messages", "", {"x-api-key": "batch"}, json.dumps(params).encode()))
        return r.status, r.body
    return answer


def anthropic_server(latency_s: float = 0.0, faults: FaultPlan | None = None,
                     reply: Callable[[list[dict], int], str] = echo, batch: dict | None = None) -> LoopbackServer:
    """``with anthropic_server() as srv:`` then ``base_url=srv.url``. Message Batches are served
    too: ``batch`` holds :class:`~music_core.testing.batch.BatchJobs` options; ``srv.batch_jobs``."""
    online = functools.partial(handle, reply=reply, seen={})
    jobs = BatchJobs(online_answer(online), prefix="msgbatch", **(batch or {}))
    srv = LoopbackServer(functools.partial(handle_batch, jobs=jobs, online=online), latency_s=latency_s, faults=faults)
    srv.batch_jobs = jobs  # type: ignore[attr-defined]
    return srv
