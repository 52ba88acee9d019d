"""The ``openai`` chat provider: api.openai.com through the official ``openai`` SDK (imported on
first call); any OpenAI-compatible server (a ``base_url``) through a lean raw transport by
default (``raw.py``), or through the SDK with ``options.http: aiohttp`` (or ``httpx``)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from music_core.config.schema import OptionError, option
from music_core.formats import text_of_parts
from music_core.llm import errors as E
from music_core.llm.provider import FIND_WINDOW_S, BatchJobStatus, BatchResults, ChatProvider
from music_core.llm.types import Completion, ProviderCall, Usage, split_usage

CONNECTIONS_PER_CLIENT = 8


@dataclass
class OpenAIOptions:
    """``models.<name>.options`` of an ``openai`` endpoint."""

    http: str | None = option(None, "transport: raw (the default for a base_url: one aiohttp POST per call), aiohttp or "
                                    "httpx (the official SDK; always the SDK for api.openai.com)")
    max_tokens_field: str | None = option(None, "the request field of the token cap: max_completion_tokens (default at "
                                                "api.openai.com) or max_tokens (default for a base_url)")
    extra_body: dict[str, Any] = option({}, "fields merged into every request body, for what a server takes beyond "
                                            "the API (vLLM's top_k, repetition_penalty, chat_template_kwargs)")

    def __post_init__(self) -> None:
        if self.http not in (None, "raw", "aiohttp", "httpx"):
            raise OptionError("http", f"is {self.http!r}; use raw, aiohttp or httpx")
        if self.max_tokens_field not in (None, "max_tokens", "max_completion_tokens"):
            raise OptionError("max_tokens_field", f"is {self.max_tokens_field!r}; use max_tokens or max_completion_tokens")


class OpenAIProvider(ChatProvider):
    name = "openai"
    supports_n = True
    supports_seed = True  # sample i goes out with seed + i: distinct and reproducible samples
    supports_logprobs = True  # logprobs + top_logprobs (api.openai.com, vLLM, llama.cpp, SGLang)
    transport_options = frozenset({"http"})
    options_class = OpenAIOptions
    default_api_key_env = "OPENAI_API_KEY"
    supports_batch = True
    batch_limit_requests = 50_000  # the Batch API's limits per job
    batch_limit_bytes = 200 * 2**20

    def __init__(self, endpoint):
        super().__init__(endpoint)
        self._clients: list[Any] = []
        self._ended: dict[str, Any] = {}  # job id -> the ended job batch_status saw (results reads it)
        self._next = 0
        self._raw: Any = None
        # Self-hosted servers (a base_url) get the lean raw transport; api.openai.com the SDK.
        self.transport = str(endpoint.options.get("http") or ("raw" if endpoint.base_url else "aiohttp"))
        if self.transport not in ("raw", "aiohttp", "httpx"):
            from music_core.errors import ConfigError

            raise ConfigError(f"openai endpoint (model {endpoint.model}): options.http is {self.transport!r}; "
                              f"use raw, aiohttp or httpx")
        if self.transport == "raw" and not endpoint.base_url:
            self.transport = "aiohttp"  # api.openai.com: always through the official SDK
        # Self-hosted servers usually take any key; api.openai.com needs one.
        self.requires_api_key = endpoint.base_url is None or endpoint.api_key_env is not None

    def client(self) -> Any:
        """The SDK client (several, round-robin, on httpx: its pool rescans every connection
        for each request, so one pool of 64 connections costs more CPU than the calls
        themselves; shards of at most CONNECTIONS_PER_CLIENT keep that scan short)."""
        if not self._clients:
            import openai

            key = self.api_key() or "not-needed"
            http = self._http_client()
            # aiohttp's pool has no per-request scan; httpx's does, so shard it.
            shards = 1 if http is not None else max(1, -(-self.endpoint.concurrency // CONNECTIONS_PER_CLIENT))
            self._clients = [openai.AsyncOpenAI(api_key=key, base_url=self.endpoint.base_url,
                                                timeout=self.endpoint.timeout_s, max_retries=0,
                                                http_client=http if i == 0 else self._http_client())
                             for i in range(shards)]
        self._next = (self._next + 1) % len(self._clients)
        return self._clients[self._next]

    def raw(self) -> Any:
        if self._raw is None:
            from .raw import RawTransport

            self._raw = RawTransport(self.endpoint.base_url or "https://api.openai.com/v1", self.api_key() or "not-needed",
                                     timeout_s=self.endpoint.timeout_s, connections=max(1, self.endpoint.concurrency))
        return self._raw

    def _http_client(self) -> Any:
        """The SDK's aiohttp transport where installed (``openai[aiohttp]``): the SDK's own
        advice for high concurrency, and about a third less client CPU per call than httpx
        in benchmarks/llm_throughput.py. ``options.http: httpx`` keeps the default."""
        if self.transport != "aiohttp":
            return None
        try:
            import aiohttp  # noqa: F401
            from openai import DefaultAioHttpClient
        except ImportError:
            return None
        return DefaultAioHttpClient(timeout=self.endpoint.timeout_s)

    def _request(self, call: ProviderCall) -> dict[str, Any]:
        p = call.params
        # api.openai.com wants max_completion_tokens; many compatible servers know only max_tokens.
        field = self.endpoint.options.get("max_tokens_field") or (
            "max_completion_tokens" if self.endpoint.base_url is None else "max_tokens")
        kw: dict[str, Any] = {"model": self.endpoint.model, "messages": list(call.messages),
                              "temperature": p.temperature, field: p.max_tokens}
        if call.n > 1:
            kw["n"] = call.n
        if p.top_p is not None:
            kw["top_p"] = p.top_p
        if p.stop:
            kw["stop"] = list(p.stop)
        if p.seed is not None:
            kw["seed"] = p.seed
        if p.top_logprobs:
            kw["logprobs"] = True
            kw["top_logprobs"] = p.top_logprobs
        extra = self.endpoint.options.get("extra_body")
        if extra:
            kw["extra_body"] = dict(extra)
        return kw

    def warm_up(self) -> None:
        if self.transport == "raw":
            self.raw().session()
        else:
            self.client()

    async def generate(self, call: ProviderCall) -> list[Completion]:
        if self.transport == "raw":
            kw = self._request(call)
            extra = kw.pop("extra_body", None) or {}
            return self._completions(await self.raw().post({**kw, **extra}), call.n)
        import httpx2

        try:
            # ``client.post`` rather than ``chat.completions.create``, and the raw response: the
            # typed path walks every message through a TypedDict transform and every answer
            # through pydantic (~1 ms a call, most of the client's CPU at 64 in flight). Auth,
            # status errors and timeouts are still the SDK's own.
            raw = await self.client().post("/chat/completions", body=self._body(call), cast_to=httpx2.Response)
            data = raw.json()
        except Exception as exc:
            raise _typed(exc) from None
        return self._completions(data, call.n)

    def _body(self, call: ProviderCall) -> dict[str, Any]:
        kw = self._request(call)
        extra = kw.pop("extra_body", None) or {}
        return {**kw, **extra}

    # Batch mode: the Batch API over the Files API (a JSONL of chat-completions bodies).

    def batch_item_bytes(self, call: ProviderCall) -> int:
        return len(json.dumps(self._body(call), ensure_ascii=False).encode()) + 120

    async def batch_submit(self, items: list[tuple[str, ProviderCall]], label: str) -> str:
        lines = [json.dumps({"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": self._body(call)},
                            ensure_ascii=False) for cid, call in items]
        client = self.client()
        try:
            upload = await client.files.create(file=("music-batch.jsonl", ("\n".join(lines) + "\n").encode(),
                                                     "application/jsonl"), purpose="batch")
            job = await client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                              completion_window="24h", metadata={"made_by": "music", "music_submission": label})
        except Exception as exc:
            err = _typed(exc)
            if isinstance(err, E.NotFoundError) and self.endpoint.base_url:
                # many OpenAI-compatible servers (vLLM, llama.cpp, SGLang) serve no Batch API
                raise E.NotFoundError(f"openai: {self.endpoint.base_url} has no Batch API (404 on /files or /batches); "
                                      f"use mode: online for this endpoint ({err})", status=404) from None
            raise err from None
        return str(job.id)

    async def batch_find(self, label: str, since: float, n_items: int) -> list[str]:
        found = []
        try:
            async for job in self.client().batches.list(limit=100):  # newest first
                if job.created_at < since - FIND_WINDOW_S:
                    break
                if (job.metadata or {}).get("music_submission") == label:
                    found.append(job.id)
        except Exception as exc:
            raise _typed(exc) from None
        return found

    async def batch_status(self, job_id: str) -> BatchJobStatus:
        job = await E.sdk_call(lambda: self.client().batches.retrieve(job_id), _typed)
        if job.status == "failed":
            errors = [e.message for e in ((job.errors.data or []) if job.errors else []) if e.message]
            return BatchJobStatus("failed", "; ".join(errors)[:500] or "failed")
        if job.status in ("completed", "expired", "cancelled"):
            self._ended[job_id] = job
            return BatchJobStatus("ended", job.status)
        return BatchJobStatus("running", job.status)

    async def batch_results(self, job_id: str) -> BatchResults:
        client = self.client()
        out: BatchResults = {}
        job = self._ended.pop(job_id, None) or await E.sdk_call(lambda: client.batches.retrieve(job_id), _typed)
        texts = [(await E.sdk_call(functools.partial(client.files.content, fid), _typed)).text
                 for fid in (job.output_file_id, job.error_file_id) if fid]
        for text in texts:
            for line in text.splitlines():
                if not line.strip():
                    continue
                row = json.loads(line)
                cid = row.get("custom_id")
                if not isinstance(cid, str):
                    continue
                error = row.get("error") or {}
                if error.get("code") in ("batch_expired", "batch_cancelled"):
                    continue  # never ran: absent, so it is submitted again
                response = row.get("response") or {}
                status = int(response.get("status_code") or (500 if error else 200))
                body = response.get("body")
                try:
                    if status != 200:
                        message = ((body or {}).get("error") or {}).get("message") if isinstance(body, dict) else None
                        raise E.from_status(status, f"openai batch item: {message or error.get('message') or status}")
                    data = body if isinstance(body, dict) else {}
                    out[cid] = self._completions(data, max(1, len(data.get("choices") or [])))
                except E.LLMError as exc:
                    out[cid] = exc
        return out

    async def batch_cancel(self, job_id: str) -> None:
        await E.sdk_call(lambda: self.client().batches.cancel(job_id), _typed)

    @staticmethod
    def _completions(data: Any, n: int) -> list[Completion]:
        """Completions from a chat-completions body, as OpenAI-compatible servers really send
        it: choices without an index, content as a list of text parts, usage with nulls. A shape
        that is not a chat completion is a typed (malformed) error, never a crash."""
        def malformed(why: str) -> E.LLMError:
            return E.MalformedResponseError(f"openai: malformed response: {why}")

        if not isinstance(data, dict):
            raise malformed(f"a JSON {type(data).__name__}, not an object")
        if not isinstance(data.get("choices"), list):
            error = data.get("error")
            if error:  # some proxies answer 200 with an error object (OpenRouter, LiteLLM)
                raise _error_in_body(error)
            raise malformed("no 'choices' list")
        if not all(isinstance(c, dict) for c in data["choices"]):
            raise malformed("a choice that is not an object")
        choices = [c for _, c in sorted(enumerate(data["choices"]), key=lambda ic: (_int(ic[1].get("index"), ic[0]), ic[0]))]
        if len(choices) < n:
            raise E.EmptyResponseError(f"openai: {len(choices)} choices for n={n}")
        u = data["usage"] if isinstance(data.get("usage"), dict) else {}
        usage = Usage(_int(u.get("prompt_tokens"), 0), _int(u.get("completion_tokens"), 0))
        out = []
        for choice, share in zip(choices[:n], split_usage(usage, n)):
            message = choice.get("message")
            if message is not None and not isinstance(message, dict):
                raise malformed("a choice's 'message' is not an object")
            message = message or {}
            if choice.get("finish_reason") == "content_filter":
                raise E.SafetyBlockedError("openai: the answer was blocked by the content filter")
            text = _text(message.get("content"))
            if text is None and isinstance(choice.get("text"), str):  # a completions-style choice
                text = choice["text"]
            if text is not None:
                text = _without_reasoning(text)
            if text is None or not text.strip():
                if message.get("refusal"):
                    raise E.SafetyBlockedError(f"openai: refusal: {message['refusal']}")
                raise E.EmptyResponseError("openai: empty completion")
            out.append(Completion(text, str(choice.get("finish_reason") or "stop"), share,
                                  top_logprobs=_top_logprobs(choice)))
        return out

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 4)

    async def aclose(self) -> None:
        for client in self._clients:
            await client.close()
        self._clients = []
        if self._raw is not None:
            await self._raw.aclose()
            self._raw = None


def _typed(exc: Exception) -> E.LLMError:
    """The typed error for an exception of the openai SDK."""
    import openai

    if isinstance(exc, E.LLMError):
        return exc
    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
        # The cause chain tells a refused connection (a wrong base_url) from a dropped one
        # and a slow one; the SDK's aiohttp transport calls all of them timeouts.
        return E.transport_error(exc, "openai")
    if isinstance(exc, openai.APIStatusError):
        retry_after = E.parse_retry_after(exc.response.headers.get("retry-after"))
        body = exc.body if isinstance(exc.body, dict) else {}
        code = str(body.get("code") or (body.get("error") or {}).get("code") or "")
        if "content_filter" in code or "content_policy" in code:
            return E.SafetyBlockedError(f"openai: {exc.message}", status=exc.status_code)
        return E.from_status(exc.status_code, f"openai: {exc.message}", retry_after)
    if isinstance(exc, (openai.APIResponseValidationError, ValueError)):
        return E.MalformedResponseError(f"openai: malformed response: {exc}")
    raise exc


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _text(content: Any) -> str | None:
    """A message's content: a string, or a list of parts (the shape some servers give every
    answer, and api.openai.com gives audio and refusal answers)."""
    return content if isinstance(content, str) else text_of_parts(content)


THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def _without_reasoning(text: str) -> str:
    """The answer without a leading ``<think>...</think>`` block: a reasoning model served with no
    reasoning parser (vLLM, llama.cpp, Ollama) puts its reasoning in the content, and it must not
    become a turn of a conversation. Reasoning that never closed (max_tokens ran out) leaves no
    answer."""
    head = text.lstrip()
    if not head.startswith(THINK_OPEN):
        return text
    end = head.find(THINK_CLOSE)
    return "" if end < 0 else head[end + len(THINK_CLOSE):].lstrip()


def _error_in_body(error: Any) -> E.LLMError:
    """The typed error for an error object in a 200 answer: a numeric code is an HTTP status."""
    message = str(error.get("message") or error) if isinstance(error, dict) else str(error)
    code = error.get("code") if isinstance(error, dict) else None
    status = _int(code, 0)
    if 400 <= status < 600:
        return E.from_status(status, f"openai: error in a 200 answer: {message}")
    return E.ServerError(f"openai: error in a 200 answer: {message}")


def _top_logprobs(choice: dict[str, Any]) -> list[dict[str, float]] | None:
    """``choices[i].logprobs.content[j].top_logprobs`` as one ``{token: logprob}`` per position
    (the chat-completions shape that api.openai.com, vLLM and llama.cpp's server return)."""
    logprobs = choice.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list):
        return None
    out = []
    for pos in content:
        alts: dict[str, float] = {}
        pos = pos if isinstance(pos, dict) else {}
        top = pos.get("top_logprobs")
        for alt in [*(top if isinstance(top, list) else []), pos]:  # the chosen token counts as an alternative
            lp = _float(alt.get("logprob")) if isinstance(alt, dict) else None
            if lp is not None and isinstance(alt.get("token"), str):
                alts.setdefault(alt["token"], lp)
        out.append(alts)
    return out


def _float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
