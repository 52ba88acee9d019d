"""A loopback server that speaks the OpenAI chat-completions REST API, for tests and benchmarks.

Magic words in the last user message: ``[[safety]]`` (content_filter), ``[[empty]]``,
``[[bad-request]]`` (a 400 for that prompt); ``[[length]]`` in a reply's text is removed and the
answer ends with finish_reason "length" (cut by max_tokens). Models ``missing-model`` (404), ``bad-model`` (400)."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable

from music_core.testing import FaultPlan, LoopbackServer, Request, Response
from music_core.testing.batch import BatchJobs, Job, multipart_file


def reply_text(messages: list[dict], index: int) -> str:
    last = messages[-1]["content"] if messages else ""
    return f"echo[{index}]: {last}"


Reply = Callable[[list[dict], int], str]
# (messages, sample index, the answer text) -> per position, {token: logprob} of the likeliest tokens
Logprobs = Callable[[list[dict], int, str], "list[dict[str, float]] | None"]


def word_logprobs(messages: list[dict], index: int, text: str) -> list[dict[str, float]]:
    """Each word a token, sure of itself, with one unlikely alternative."""
    return [{word: -0.05, "<alt>": -3.0} for word in text.split(" ")]


def handle(req: Request, reply: Reply = reply_text, seen: dict | None = None,
           seeded: bool = False, logprobs: Logprobs = word_logprobs) -> Response:
    if req.path.rstrip("/").endswith("/models"):
        return Response(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})
    if not req.path.endswith("/chat/completions"):
        return Response(404, {"error": {"message": f"no route {req.path}"}})
    body = req.json()
    if req.headers.get("authorization", "") in ("", "Bearer "):
        return Response(401, {"error": {"message": "missing key", "type": "invalid_request_error"}})
    if body.get("model") == "missing-model":  # vLLM and api.openai.com answer an unknown model with 404
        return Response(404, {"error": {"message": "The model `missing-model` does not exist.", "type": "NotFoundError",
                                        "code": 404}})
    if body.get("model") == "bad-model":
        return Response(400, {"error": {"message": "model not found", "type": "invalid_request_error"}})
    messages = body["messages"]
    last = messages[-1]["content"] if messages else ""
    if "[[bad-request]]" in last:  # one prompt the server refuses (too long, say)
        return Response(400, {"error": {"message": "prompt refused", "type": "invalid_request_error"}})
    n = int(body.get("n") or 1)
    seen = {} if seen is None else seen
    k = seen.get(req.body, 0)
    seed = int(body.get("seed") or 0)
    # A seeded (or temperature-0) server: the same body, seed included, gives the same answer.
    # Otherwise the seed and the repeat count both change it, as on a real sampling server.
    k = seed if seeded else k + 1009 * seed  # a real server samples afresh: the k-th identical request gets new samples
    seen[req.body] = k + 1
    choices = []
    for i in range(n):
        if "[[safety]]" in last:
            choices.append({"index": i, "finish_reason": "content_filter",
                            "message": {"role": "assistant", "content": None}})
        elif "[[empty]]" in last:
            choices.append({"index": i, "finish_reason": "stop", "message": {"role": "assistant", "content": ""}})
        else:
            text = reply(messages, k * n + i)
            cut = "[[length]]" in text  # a reply that max_tokens ended
            text = text.replace("[[length]]", "").strip()
            choice: dict[str, object] = {"index": i, "finish_reason": "length" if cut else "stop",
                                         "message": {"role": "assistant", "content": text}}
            positions = logprobs(messages, k * n + i, text) if body.get("logprobs") else None
            if positions is not None:  # None: a server that ignores the logprobs request
                top = int(body.get("top_logprobs") or 0)
                choice["logprobs"] = {"content": [
                    {"token": max(pos, key=lambda t: pos[t]), "logprob": max(pos.values()),
                     "top_logprobs": [{"token": t, "logprob": lp} for t, lp in
                                      sorted(pos.items(), key=lambda x: -x[1])[:top]]}
                    for pos in positions]}
            choices.append(choice)
    prompt_tokens = sum(len(m["content"]) // 4 + 1 for m in messages)
    return Response(200, {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
                          "model": body.get("model"), "choices": choices,
                          "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 5 * n,
                                    "total_tokens": prompt_tokens + 5 * n}})


def handle_batch(req: Request, jobs: BatchJobs, files: dict[str, bytes], online: Callable[[Request], Response]) -> Response:
    """The Batch API over the Files API: upload a JSONL, create, retrieve, cancel, read results."""
    path = req.path.rstrip("/")
    if req.headers.get("authorization", "") in ("", "Bearer "):
        return Response(401, {"error": {"message": "missing key", "type": "invalid_request_error"}})
    if req.method == "POST" and path.endswith("/files"):
        data = multipart_file(req.body, req.headers.get("content-type", ""))
        fid = f"file-{len(files):04d}"
        files[fid] = data
        return Response(200, {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                              "filename": "input.jsonl", "purpose": "batch", "status": "processed"})
    if req.method == "GET" and "/files/" in path and path.endswith("/content"):
        fid = path.split("/files/")[1].removesuffix("/content")
        if fid not in files:
            return Response(404, {"error": {"message": f"no file {fid}", "type": "invalid_request_error"}})
        return Response(200, files[fid], {"content-type": "application/octet-stream"})
    if req.method == "POST" and path.endswith("/batches"):
        body = req.json()
        raw = files.get(body.get("input_file_id", ""))
        if raw is None:
            return Response(404, {"error": {"message": "no such input file", "type": "invalid_request_error"}})
        rows = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
        models = {r["body"].get("model") for r in rows}
        if "missing-model" in models or "bad-model" in models:  # the Batch API validates, then fails the job
            job = jobs.create([], model="bad-model")
            job.state = "failed"
            return Response(200, _batch_object(job, jobs, body["input_file_id"], files))
        job = jobs.create([(r["custom_id"], r["body"]) for r in rows], model=next(iter(models), ""),
                          label=(body.get("metadata") or {}).get("music_submission", ""))
        job.input_file_id = body["input_file_id"]  # type: ignore[attr-defined]
        return jobs.created(job, Response(200, _batch_object(job, jobs, body["input_file_id"], files)))
    if req.method == "GET" and path.endswith("/batches"):
        listed = [_batch_object(j, jobs, getattr(j, "input_file_id", ""), files) for j in jobs.newest_first()]
        return Response(200, {"object": "list", "data": listed, "has_more": False,
                              "first_id": listed[0]["id"] if listed else None,
                              "last_id": listed[-1]["id"] if listed else None})
    if "/batches/" in path:
        job_id = path.split("/batches/")[1].removesuffix("/cancel")
        found = jobs.cancel(job_id) if path.endswith("/cancel") else jobs.get(job_id)
        if found is None:
            return Response(404, {"error": {"message": f"no batch {job_id}", "type": "invalid_request_error"}})
        return Response(200, _batch_object(found, jobs, getattr(found, "input_file_id", ""), files))
    return online(req)


def _batch_object(job: Job, jobs: BatchJobs, input_file_id: str, files: dict[str, bytes]) -> dict:
    out: dict = {"id": job.id, "object": "batch", "endpoint": "/v1/chat/completions", "completion_window": "24h",
                 "created_at": int(job.created), "input_file_id": input_file_id, "request_counts": jobs.counts(job),
                 "status": {"running": "in_progress"}.get(job.state, job.state),
                 "metadata": {"music_submission": job.label} if job.label else {}}
    if job.state == "failed":
        out["errors"] = {"object": "list", "data": [{"code": "model_not_found", "message": "The model does not exist"}]}
        return out
    if job.state in ("completed", "expired", "cancelled") and not hasattr(job, "output_file_id"):
        ok: list[dict] = []
        bad: list[dict] = []
        for cid, _ in job.items:
            if cid in job.results:
                status, body = job.results[cid]
                line = {"id": f"req_{cid[:8]}", "custom_id": cid,
                        "response": {"status_code": status, "request_id": "r", "body": body}, "error": None}
                (ok if status == 200 else bad).append(line)
            else:
                code = "batch_expired" if job.state == "expired" else "batch_cancelled"
                bad.append({"id": f"req_{cid[:8]}", "custom_id": cid, "response": None,
                            "error": {"code": code, "message": f"This request could not be executed ({job.state})."}})
        for name, lines in (("output_file_id", ok), ("error_file_id", bad)):
            fid = f"file-{len(files):04d}"
            files[fid] = "".join(json.dumps(x) + "\n" for x in lines).encode()
            setattr(job, name, fid if lines else None)
    out["output_file_id"] = getattr(job, "output_file_id", None)
    out["error_file_id"] = getattr(job, "error_file_id", None)
    return out


def online_answer(online: Callable[[Request], Response]) -> Callable[[dict], tuple[int, object]]:
    """A batch item answered exactly as the chat-completions route answers the same body."""
    def answer(body: dict) -> tuple[int, object]:
        r = online(Request("POST", "/v1/chat/completions", "", {"authorization": "Bearer batch"},
                           json.dumps(body).encode()))
        return r.status, r.body
    return answer


def openai_server(latency_s: float = 0.0, faults: FaultPlan | None = None, reply: Reply = reply_text, seeded: bool = False,
                  logprobs: Logprobs = word_logprobs, batch: dict | None = None) -> LoopbackServer:
    """``with openai_server() as srv:`` then ``base_url=srv.url + "/v1"``. ``reply(messages, i)``
    writes sample i's text (default: an echo of the last message); ``logprobs(messages, i, text)``
    the per-position token log-probabilities returned when a request asks for them. The Batch API
    is served too: ``batch`` holds :class:`~music_core.testing.batch.BatchJobs` options, and
    ``srv.batch_jobs`` the jobs (for what was submitted, polled, answered)."""
    online = functools.partial(handle, reply=reply, seen={}, seeded=seeded, logprobs=logprobs)
    jobs = BatchJobs(online_answer(online), **(batch or {}))
    srv = LoopbackServer(functools.partial(handle_batch, jobs=jobs, files={}, online=online),
                         latency_s=latency_s, faults=faults)
    srv.batch_jobs = jobs  # type: ignore[attr-defined]
    return srv


def main() -> None:
    """``python -m music_openai.testing --latency 0.1``: serve until killed, print the URL."""
    import argparse
    import signal
    import sys
    import threading

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--fault-rate", type=float, default=0.0)
    args = ap.parse_args()
    with openai_server(args.latency, FaultPlan(rate=args.fault_rate)) as srv:
        print(srv.url, flush=True)
        done = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        try:
            done.wait()
        except KeyboardInterrupt:
            pass
        print(f"served {len(srv.requests)} requests, max in flight {srv.max_in_flight}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
