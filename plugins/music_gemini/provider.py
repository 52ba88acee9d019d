"""The ``gemini`` chat provider on ``google-genai`` (the older google-generativeai SDK reached
end of life on 2025-11-30). Endpoint options: :class:`GeminiOptions`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from music_core.config.schema import option
from music_core.llm import errors as E
from music_core.llm.provider import FIND_WINDOW_S, BatchJobStatus, BatchResults, ChatProvider
from music_core.llm.types import Completion, ProviderCall, Usage, split_usage

BLOCKED_FINISH = {"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "RECITATION", "IMAGE_SAFETY"}


@dataclass
class GeminiOptions:
    """``models.<name>.options`` of a ``gemini`` endpoint."""

    vertexai: bool = option(False, "call Vertex AI (credentials from the environment) instead of the Gemini API")
    project: str | None = option(None, "Vertex AI project")
    location: str | None = option(None, "Vertex AI location, e.g. us-central1")
    api_version: str | None = option(None, "API version, e.g. v1 (default: the SDK's)")
    safety_settings: list[dict[str, Any]] = option([], "a list of {category, threshold}, as google-genai's SafetySetting")
    thinking_budget: int | None = option(None, "thinking tokens for models that think (0: off)")


class GeminiProvider(ChatProvider):
    name = "gemini"
    supports_n = True  # candidate_count
    supports_seed = True  # GenerateContentConfig.seed: sample i goes out with seed + i
    default_api_key_env = "GEMINI_API_KEY"
    options_class = GeminiOptions
    supports_batch = True
    batch_limit_requests = 10_000
    batch_limit_bytes = 20 * 2**20  # inlined requests: the Gemini API's limit per batch request

    def __init__(self, endpoint):
        super().__init__(endpoint)
        self._client: Any = None
        self._ended: dict[str, Any] = {}  # job id -> the ended job batch_status saw (it holds the results)
        self.vertex = bool(endpoint.options.get("vertexai"))
        self.requires_api_key = not self.vertex  # Vertex AI authenticates with ADC

    def api_key(self) -> str | None:
        if not self.endpoint.api_key_env and not os.environ.get("GEMINI_API_KEY") and os.environ.get("GOOGLE_API_KEY"):
            return os.environ["GOOGLE_API_KEY"]  # the SDK's other customary variable
        return super().api_key()

    def client(self) -> Any:
        if self._client is None:
            from google import genai
            from google.genai import types

            # attempts=1: never retry inside the SDK. retry_options=None is not enough: the SDK
            # then retries aiohttp connection errors on its own, hidden from our limiter and counts.
            http = types.HttpOptions(timeout=int(self.endpoint.timeout_s * 1000), base_url=self.endpoint.base_url,
                                     api_version=self.endpoint.options.get("api_version"),
                                     retry_options=types.HttpRetryOptions(attempts=1))
            opts = self.endpoint.options
            if self.vertex:
                self._client = genai.Client(vertexai=True, project=opts.get("project"), location=opts.get("location"),
                                            http_options=http)
            else:
                self._client = genai.Client(api_key=self.api_key(), http_options=http)
        return self._client

    def _request(self, call: ProviderCall) -> dict[str, Any]:
        from google.genai import types

        p = call.params
        system = "\n\n".join(m["content"] for m in call.messages if m["role"] == "system")
        contents = [types.Content(role="model" if m["role"] == "assistant" else "user", parts=[types.Part(text=m["content"])])
                    for m in call.messages if m["role"] != "system"]
        cfg: dict[str, Any] = {"temperature": p.temperature, "max_output_tokens": p.max_tokens}
        if call.n > 1:
            cfg["candidate_count"] = call.n
        if system:
            cfg["system_instruction"] = system
        if p.top_p is not None:
            cfg["top_p"] = p.top_p
        if p.stop:
            cfg["stop_sequences"] = list(p.stop)
        if p.seed is not None:
            cfg["seed"] = p.seed
        if self.endpoint.options.get("safety_settings"):
            cfg["safety_settings"] = [types.SafetySetting(**s) for s in self.endpoint.options["safety_settings"]]
        if "thinking_budget" in self.endpoint.options:
            cfg["thinking_config"] = types.ThinkingConfig(thinking_budget=int(self.endpoint.options["thinking_budget"]))
        return {"model": self.endpoint.model, "contents": contents, "config": types.GenerateContentConfig(**cfg)}

    def warm_up(self) -> None:
        self.client()
        from google.genai import types  # noqa: F401 (the request builder needs it)

    async def generate(self, call: ProviderCall) -> list[Completion]:
        client = self.client()  # outside the try: a missing key is an AuthError, not transport
        try:
            resp = await client.aio.models.generate_content(**self._request(call))
        except Exception as exc:
            raise _typed(exc) from None
        return self._completions(resp, call.n)

    @staticmethod
    def _completions(resp: Any, n: int) -> list[Completion]:
        feedback = getattr(resp, "prompt_feedback", None)
        if feedback is not None and getattr(feedback, "block_reason", None):
            raise E.SafetyBlockedError(f"gemini: prompt blocked ({_enum(feedback.block_reason)})")
        candidates = list(resp.candidates or [])
        if not candidates:
            raise E.EmptyResponseError("gemini: no candidates")
        meta = resp.usage_metadata
        usage = Usage(getattr(meta, "prompt_token_count", 0) or 0,
                      (getattr(meta, "candidates_token_count", 0) or 0) + (getattr(meta, "thoughts_token_count", 0) or 0))
        n = n or len(candidates)
        out = []
        for cand, share in zip(candidates[:n], split_usage(usage, n)):
            finish = _enum(cand.finish_reason) if cand.finish_reason else "STOP"
            if finish in BLOCKED_FINISH:
                raise E.SafetyBlockedError(f"gemini: candidate blocked (finish_reason={finish})")
            parts = cand.content.parts if cand.content and cand.content.parts else []
            text = "".join(p.text for p in parts if p.text and not getattr(p, "thought", False))
            if not text.strip():
                raise E.EmptyResponseError(f"gemini: empty candidate (finish_reason={finish})")
            out.append(Completion(text, "length" if finish == "MAX_TOKENS" else "stop", share))
        if len(out) < n:
            raise E.EmptyResponseError(f"gemini: {len(out)} candidates for n={n}")
        return out

    # Batch mode: the Gemini API's batch mode with inlined requests (results come back inside
    # the job, each with the request's metadata key). Vertex AI batch prediction reads its input
    # from Cloud Storage or BigQuery instead, which this provider does not write.

    def batch_item_bytes(self, call: ProviderCall) -> int:
        return 400 + sum(len(m["content"].encode()) + 60 for m in call.messages)

    async def batch_submit(self, items: list[tuple[str, ProviderCall]], label: str) -> str:
        from google.genai import types

        if self.vertex:
            raise E.BadRequestError("gemini: batch mode needs the Gemini API (Vertex AI batch prediction reads "
                                    "from Cloud Storage or BigQuery); use mode: online with vertexai")
        requests = []
        for cid, call in items:
            r = self._request(call)
            requests.append(types.InlinedRequest(contents=r["contents"], config=r["config"], metadata={"key": cid}))
        client = self.client()
        job = await E.sdk_call(lambda: client.aio.batches.create(model=self.endpoint.model, src=requests,
                                                                 config={"display_name": label}), _typed)
        return str(job.name)

    async def batch_find(self, label: str, since: float, n_items: int) -> list[str]:
        found = []
        try:
            async for job in await self.client().aio.batches.list(config={"page_size": 100}):  # newest first
                if job.create_time is not None and job.create_time.timestamp() < since - FIND_WINDOW_S:
                    break
                if job.display_name == label and job.name:
                    found.append(job.name)
        except Exception as exc:
            raise _typed(exc) from None
        return found

    async def batch_status(self, job_id: str) -> BatchJobStatus:
        job = await E.sdk_call(lambda: self.client().aio.batches.get(name=job_id), _typed)
        state = _enum(job.state)
        if state == "JOB_STATE_FAILED":
            return BatchJobStatus("failed", str(getattr(job.error, "message", None) or "failed"))
        if state in ("JOB_STATE_SUCCEEDED", "JOB_STATE_PARTIALLY_SUCCEEDED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"):
            self._ended[job_id] = job
            return BatchJobStatus("ended", state.removeprefix("JOB_STATE_").lower())
        return BatchJobStatus("running", state)

    async def batch_results(self, job_id: str) -> BatchResults:
        job = self._ended.pop(job_id, None) or await E.sdk_call(lambda: self.client().aio.batches.get(name=job_id),
                                                                 _typed)
        out: BatchResults = {}
        for item in (job.dest.inlined_responses or []) if job.dest else []:
            cid = (item.metadata or {}).get("key")
            if not cid:
                continue
            if item.error is not None:
                code = int(getattr(item.error, "code", None) or 500)
                out[cid] = E.from_status(code if code >= 400 else 500,
                                         f"gemini batch item: {getattr(item.error, 'message', None) or item.error}")
                continue
            try:
                out[cid] = self._completions(item.response, 0)
            except E.LLMError as exc:
                out[cid] = exc
        return out

    async def batch_cancel(self, job_id: str) -> None:
        await E.sdk_call(lambda: self.client().aio.batches.cancel(name=job_id), _typed)

    async def aclose(self) -> None:
        if self._client is not None:
            try:
                await self._client.aio.aclose()
            except Exception:
                pass
            self._client = None


def _typed(exc: Exception) -> E.LLMError:
    """The typed error for an exception of google-genai or its transport."""
    from google.genai import errors as gerr

    if isinstance(exc, E.LLMError):
        return exc
    if isinstance(exc, gerr.APIError):
        return E.from_status(int(exc.code or 500), f"gemini: {exc.message or exc}", _retry_after(exc))
    if isinstance(exc, ValueError):  # a body that is not JSON
        return E.MalformedResponseError(f"gemini: malformed response: {exc}")
    return E.transport_error(exc, "gemini")  # transport errors come from httpx2 or aiohttp


def _enum(value: Any) -> str:
    return str(getattr(value, "name", value)).split(".")[-1]


def _retry_after(exc: Any) -> float | None:
    """Google's RetryInfo.retryDelay from the error body ("37s"), else a Retry-After header."""
    body = getattr(exc, "details", None)
    error = body.get("error", body) if isinstance(body, dict) else {}
    for detail in (error.get("details") or []) if isinstance(error, dict) else []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
            delay = E.parse_duration(detail.get("retryDelay"))
            if delay is not None:
                return delay
    headers = getattr(getattr(exc, "response", None), "headers", None)
    return E.parse_retry_after(headers.get("retry-after")) if headers is not None else None
