"""A small asyncio HTTP/1.1 server on 127.0.0.1 for driving real SDK clients in tests and
benchmarks: keep-alive, a set latency, and injected faults (429 with Retry-After, 500, hangs
that trip the client's timeout, dropped connections, malformed bodies)."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Response:
    status: int = 200
    body: Any = None  # dict/list -> JSON; bytes -> sent as is
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> tuple[bytes, dict[str, str]]:
        if isinstance(self.body, (bytes, bytearray)):
            return bytes(self.body), {"content-type": "application/json", **self.headers}
        return json.dumps(self.body).encode(), {"content-type": "application/json", **self.headers}


@dataclass
class FaultPlan:
    """Which requests fail and how. ``rate`` of requests (seeded) fail with one of ``kinds``;
    or ``script`` lists a fault per request number (None = serve normally). ``outage_s``: every
    request in the first seconds after the first one fails with ``outage_kind`` (an outage at
    the start of a run)."""

    rate: float = 0.0
    kinds: tuple[str, ...] = ("429", "500", "timeout")
    retry_after_s: float = 0.05
    hang_s: float = 30.0
    seed: int = 0
    script: list[str | None] | None = None
    outage_s: float = 0.0
    outage_kind: str = "500"

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()
        self._n = 0
        self._first: float | None = None

    def next(self) -> str | None:
        with self._lock:
            now = time.monotonic()
            if self._first is None:
                self._first = now
            if now - self._first < self.outage_s:
                return self.outage_kind
            i, self._n = self._n, self._n + 1
            if self.script is not None:
                return self.script[i] if i < len(self.script) else None
            if self._rng.random() < self.rate:
                return self._rng.choice(self.kinds)
            return None


Handler = Callable[[Request], "Response | Awaitable[Response]"]
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
           500: "Internal Server Error", 503: "Service Unavailable"}


class LoopbackServer:
    """``with LoopbackServer(handler) as srv: client(base_url=srv.url)``."""

    def __init__(self, handler: Handler, *, latency_s: float = 0.0, faults: FaultPlan | None = None):
        self.handler = handler
        self.latency_s = latency_s
        self.faults = faults or FaultPlan()
        self.requests: list[Request] = []
        self.outcomes: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.started_at: list[float] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LoopbackServer:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)

            async def start() -> None:
                self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=1024)
                self.port = self._server.sockets[0].getsockname()[1]

            self._loop.run_until_complete(start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def shutdown() -> None:
            if self._server:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        if self._loop:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                path, _, query = target.partition("?")
                req = Request(method, path, query, headers, body)
                if not await self._respond(req, writer):
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _respond(self, req: Request, writer: asyncio.StreamWriter) -> bool:
        self.requests.append(req)
        self.started_at.append(time.monotonic())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            fault = self.faults.next()
            self.outcomes[fault or "ok"] += 1
            if fault == "timeout":
                await asyncio.sleep(self.faults.hang_s)
                return False
            if fault == "drop":
                writer.transport.abort()
                return False
            if fault == "429":
                resp = Response(429, {"error": {"message": "rate limited (injected)", "type": "rate_limit_error",
                                                "code": 429, "status": "RESOURCE_EXHAUSTED"}},
                                {"retry-after": str(self.faults.retry_after_s)})
            elif fault == "500":
                resp = Response(500, {"error": {"message": "server error (injected)", "type": "api_error",
                                                "code": 500, "status": "INTERNAL"}})
            elif fault == "malformed":
                resp = Response(200, b'{"choices": [ this is not json')
            else:
                out = self.handler(req)
                resp = await out if asyncio.iscoroutine(out) else out  # type: ignore[assignment]
            payload, headers = resp.encode()
            head = [f"HTTP/1.1 {resp.status} {REASONS.get(resp.status, 'Status')}",
                    f"content-length: {len(payload)}", "connection: keep-alive"]
            head += [f"{k}: {v}" for k, v in headers.items()]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
            await writer.drain()
            return True
        finally:
            self.in_flight -= 1
