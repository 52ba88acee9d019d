"""The reward server's routes: ``POST /v1/rewards`` (conversations as messages), ``POST
/get_reward`` (OpenRLHF's remote RM), ``POST /classify`` (vLLM's, which verl's reward loop calls),
``GET /health`` and ``GET /metrics``. Every body is checked before anything is queued: a
malformed one answers 422 naming the field, an oversized one 413, a full queue 429 with
Retry-After, a failed scoring batch 500 for its own requests only."""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from music_core.data import conversation_errors
from music_core.packed import EncodedConversation

from .batcher import QueueFull, ScorerFailed
from .metrics import Metrics
from .service import RewardService


class Invalid(Exception):
    def __init__(self, status: int, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.status, self.field, self.message = status, field, message


@dataclass
class Limits:
    max_body_bytes: int = 8 * 1024 * 1024
    max_items: int = 512            # conversations or strings in one request
    max_chars: int = 2_000_000      # characters in one request's texts
    retry_after_s: int = 1


def _list(body: dict[str, Any], key: str, kind: type, required: bool = True) -> list[Any]:
    value = body.get(key)
    if value is None and not required:
        return []
    if isinstance(value, kind) and kind is str:
        return [value]
    if not isinstance(value, list) or (required and not value):
        raise Invalid(422, key, f"must be a non-empty list{' of strings (or one string)' if kind is str else ''}")
    for i, v in enumerate(value):
        if not isinstance(v, kind):
            raise Invalid(422, f"{key}[{i}]", f"must be a {kind.__name__}")
    return value


def _conversation(raw: Any, where: str) -> list[Any]:
    errors = conversation_errors(raw, must_end_with="assistant")
    if errors:
        raise Invalid(422, where, errors[0])
    return raw


def build_app(services: dict[str, RewardService], metrics: Metrics, limits: Limits | None = None,
              default: str | None = None) -> Starlette:
    lim = limits or Limits()
    default = default or next(iter(services))

    @asynccontextmanager
    async def lifespan(app: Starlette):  # type: ignore[no-untyped-def]
        for s in services.values():
            s.queue.start()
        yield
        await asyncio.gather(*(s.queue.drain() for s in services.values()))  # SIGTERM: finish what is queued

    async def read(request: Request) -> dict[str, Any]:
        # Read the body whole even when it is too big (kept only up to the limit): a client gets its
        # 413 instead of a reset connection halfway through sending.
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size <= lim.max_body_bytes:
                chunks.append(chunk)
        if size > lim.max_body_bytes:
            raise Invalid(413, "body", f"{size} bytes; at most {lim.max_body_bytes}")
        raw = b"".join(chunks)
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise Invalid(422, "body", f"not JSON ({exc})") from None
        if not isinstance(body, dict):
            raise Invalid(422, "body", "must be a JSON object")
        return body

    def service(body: dict[str, Any]) -> RewardService:
        name = body.get("model") or default
        if not isinstance(name, str) or name not in services:
            raise Invalid(422 if not isinstance(name, str) else 404, "model",
                          f"unknown reward model {name!r} (served: {sorted(services)})")
        return services[name]

    def sized(n: int, chars: int) -> None:
        if n > lim.max_items:
            raise Invalid(413, "body", f"{n} items in one request; at most {lim.max_items}")
        if chars > lim.max_chars:
            raise Invalid(413, "body", f"{chars} characters in one request; at most {lim.max_chars}")

    def route(name: str, handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def wrapped(request: Request) -> Response:
            t0 = time.perf_counter()
            try:
                response = await handler(request)
            except Invalid as exc:
                response = JSONResponse({"error": exc.message, "field": exc.field}, status_code=exc.status)
            except QueueFull as exc:
                response = JSONResponse({"error": f"busy: {exc}"}, status_code=429,
                                        headers={"Retry-After": str(lim.retry_after_s)})
            except ScorerFailed as exc:
                response = JSONResponse({"error": f"scoring failed: {exc}"}, status_code=500)
            except Exception as exc:  # a bug: this request fails, the server does not
                response = JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)
            metrics.requests.inc(name, str(response.status_code))
            metrics.request_seconds.observe(name, time.perf_counter() - t0)
            return response
        return wrapped

    async def rewards(request: Request) -> Response:
        body = await read(request)
        svc = service(body)
        convs = [_conversation(c, f"conversations[{i}]") for i, c in enumerate(_list(body, "conversations", list))]
        per_turn = body.get("per_turn", False)
        if not isinstance(per_turn, bool):
            raise Invalid(422, "per_turn", "must be true or false")
        sized(len(convs), sum(len(m["content"]) for c in convs for m in c))
        prefixes = [[k + 1 for k, m in enumerate(c) if m["role"] == "assistant"] for c in convs] if per_turn else []
        todo = list(convs) + [c[:e] for c, ends in zip(convs, prefixes) for e in ends[:-1]]
        encoded = await asyncio.to_thread(lambda: [svc.encode_messages(c) for c in todo])
        scores = await svc.score(encoded)
        out: dict[str, Any] = {"model": svc.name, "rewards": scores[: len(convs)],
                               "truncated": [e.truncated for e in encoded[: len(convs)]]}
        if per_turn:  # the reward after each assistant turn: the conversation scored up to that turn
            rest = iter(scores[len(convs):])
            out["per_turn"] = [[next(rest) for _ in ends[:-1]] + [scores[i]] for i, ends in enumerate(prefixes)]
        metrics.sequences.inc(svc.name, by=len(encoded))
        return JSONResponse(out)

    async def get_reward(request: Request) -> Response:
        body = await read(request)
        svc = service(body)
        queries = _list(body, "query", str)
        for key in ("prompts", "labels"):
            if key in body and body[key] is not None and not isinstance(body[key], list):
                raise Invalid(422, key, "must be a list when given")
        sized(len(queries), sum(len(q) for q in queries))
        encoded: list[EncodedConversation] = await asyncio.to_thread(lambda: [svc.encode_text(q) for q in queries])
        scores = await svc.score(encoded)
        metrics.sequences.inc(svc.name, by=len(encoded))
        return JSONResponse({"rewards": scores, "scores": scores, "extra_logs": {},
                             "truncated": [e.truncated for e in encoded]})

    async def classify(request: Request) -> Response:
        body = await read(request)
        svc = service(body)
        if "messages" in body and "input" not in body:  # the chat form: one conversation, templated here
            encoded = [await asyncio.to_thread(svc.encode_messages, _conversation(body["messages"], "messages"))]
        else:
            inputs = _list(body, "input", str)
            sized(len(inputs), sum(len(x) for x in inputs))
            encoded = await asyncio.to_thread(lambda: [svc.encode_text(x) for x in inputs])
        activation = body.get("use_activation", body.get("activation", True))
        if not isinstance(activation, bool):
            raise Invalid(422, "use_activation", "must be true or false")
        scores = await svc.score(encoded)
        values = [1 / (1 + math.exp(-s)) if activation else s for s in scores]  # vLLM: a sigmoid unless told not to
        tokens = sum(len(e.ids) for e in encoded)
        metrics.sequences.inc(svc.name, by=len(encoded))
        return JSONResponse({"id": f"classify-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()),
                             "model": svc.name, "usage": {"prompt_tokens": tokens, "total_tokens": tokens,
                                                          "completion_tokens": 0, "prompt_tokens_details": None},
                             "data": [{"index": i, "label": "LABEL_0", "probs": [v], "num_classes": 1,
                                       "truncated": e.truncated} for i, (v, e) in enumerate(zip(values, encoded))]})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "models": {n: {"path": s.path, "max_length": s.max_length,
                                                            "queued": s.queue.depth()} for n, s in services.items()}})

    async def prometheus(request: Request) -> Response:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    routes = [Route("/v1/rewards", route("rewards", rewards), methods=["POST"]),
              Route("/get_reward", route("get_reward", get_reward), methods=["POST"]),
              Route("/classify", route("classify", classify), methods=["POST"]),
              Route("/v1/classify", route("classify", classify), methods=["POST"]),
              Route("/health", health), Route("/metrics", prometheus)]
    return Starlette(routes=routes, lifespan=lifespan)
