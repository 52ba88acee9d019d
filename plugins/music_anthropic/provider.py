"""The ``anthropic`` chat provider, on the official ``anthropic`` SDK (imported on first call)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from music_core.config.schema import option
from music_core.llm import errors as E
from music_core.llm.provider import FIND_WINDOW_S, BatchJobStatus, BatchResults, ChatProvider
from music_core.llm.types import Completion, ProviderCall, Usage
from music_core.progress import log


@dataclass
class AnthropicOptions:
    """``models.<name>.options`` of an ``anthropic`` endpoint."""

    sampling_params: bool = option(False, "send temperature and top_p, for models and proxies that take them (the "
                                          "current Messages API takes none: without this a configured temperature is "
                                          "refused before any call, never dropped)")
    effort: str | None = option(None, "output_config.effort (low, medium, high) for models that take it")


class AnthropicProvider(ChatProvider):
    name = "anthropic"
    supports_n = False  # the Messages API returns one sample per call
    supports_seed = False  # and takes no seed: samples are separate calls, sampled by the server
    default_api_key_env = "ANTHROPIC_API_KEY"
    options_class = AnthropicOptions
    supports_batch = True
    batch_limit_requests = 100_000  # Message Batches' limits per batch
    batch_limit_bytes = 256 * 2**20

    def __init__(self, endpoint):
        super().__init__(endpoint)
        self._client: Any = None
        self._warned = False

    def _sampling_params(self) -> bool:
        return bool(self.endpoint.options.get("sampling_params"))

    def check_credentials(self) -> None:
        super().check_credentials()
        e = self.endpoint
        if not self._sampling_params() and (e.temperature != 1.0 or e.top_p is not None):
            raise E.BadRequestError(
                f"anthropic: the endpoint sets temperature {e.temperature}" + (f" and top_p {e.top_p}" if e.top_p else "")
                + ", but the current Messages API takes no sampling parameters; remove them (temperature 1.0 is the "
                  "API's own), or set options.sampling_params: true for a model or proxy that takes them")

    def client(self) -> Any:
        if self._client is None:
            import anthropic

            self._client = anthropic.AsyncAnthropic(api_key=self.api_key(), base_url=self.endpoint.base_url,
                                                    timeout=self.endpoint.timeout_s, max_retries=0)
        return self._client

    def _request(self, call: ProviderCall) -> dict[str, Any]:
        p = call.params
        system = "\n\n".join(m["content"] for m in call.messages if m["role"] == "system")
        kw: dict[str, Any] = {
            "model": self.endpoint.model, "max_tokens": p.max_tokens,
            "messages": [{"role": m["role"], "content": m["content"]} for m in call.messages if m["role"] != "system"],
        }
        if system:
            kw["system"] = system
        if p.stop:
            kw["stop_sequences"] = list(p.stop)
        # The current Messages API (and SDK) takes no sampling parameters. Older models and
        # proxies do: options.sampling_params: true sends them through the raw body. Otherwise a
        # configured temperature is refused before any call (preflight) and a component's own
        # request for one (a judge's 0.0) is dropped with a warning, never silently.
        if self._sampling_params():
            kw["extra_body"] = {"temperature": p.temperature, **({"top_p": p.top_p} if p.top_p is not None else {})}
        elif (p.temperature != 1.0 or p.top_p is not None) and not self._warned:
            self._warned = True
            log(f"warning: anthropic endpoint (model {self.endpoint.model}): the Messages API takes no sampling "
                f"parameters, so a component's temperature {p.temperature} is not applied "
                f"(options.sampling_params: true sends it, for models and proxies that take it)")
        if self.endpoint.options.get("effort"):
            kw["output_config"] = {"effort": self.endpoint.options["effort"]}
        return kw

    def warm_up(self) -> None:
        self.client()

    async def generate(self, call: ProviderCall) -> list[Completion]:
        request = self._request(call)  # a refused parameter is raised before any wire call
        try:
            resp = await self.client().messages.create(**request)
        except Exception as exc:
            raise _typed(exc) from None
        return self._completions(resp)

    @staticmethod
    def _completions(resp: Any) -> list[Completion]:
        if resp.stop_reason == "refusal":
            raise E.SafetyBlockedError("anthropic: the model refused (stop_reason=refusal)")
        text = "".join(getattr(b, "text", "") for b in resp.content or [] if getattr(b, "type", "") == "text")
        if not text.strip():
            raise E.EmptyResponseError("anthropic: empty completion")
        finish = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}.get(resp.stop_reason or "", resp.stop_reason or "stop")
        usage = Usage(resp.usage.input_tokens or 0, resp.usage.output_tokens or 0) if resp.usage else Usage()
        return [Completion(text, finish, usage)]

    # Batch mode: Message Batches (results come back as JSONL, in any order, by custom_id).

    def _params(self, call: ProviderCall) -> dict[str, Any]:
        kw = self._request(call)
        return {**kw, **(kw.pop("extra_body", None) or {})}

    def batch_item_bytes(self, call: ProviderCall) -> int:
        return len(json.dumps(self._params(call), ensure_ascii=False).encode()) + 100

    async def batch_submit(self, items: list[tuple[str, ProviderCall]], label: str) -> str:
        requests = [{"custom_id": cid, "params": self._params(call)} for cid, call in items]
        job = await E.sdk_call(lambda: self.client().messages.batches.create(requests=requests),  # type: ignore[arg-type]
                               _typed)
        return str(job.id)

    async def batch_find(self, label: str, since: float, n_items: int) -> list[str]:
        """Message Batches keep no label: a batch created just after ``since`` holding
        ``n_items`` requests is the candidate (the journal rules out the ones it knows)."""
        found = []
        try:
            async for job in self.client().messages.batches.list(limit=100):  # newest first
                created = job.created_at.timestamp()
                if created < since - FIND_WINDOW_S:
                    break
                c = job.request_counts
                if created >= since - 60 and c.processing + c.succeeded + c.errored + c.canceled + c.expired == n_items:
                    found.append(job.id)
        except Exception as exc:
            raise _typed(exc) from None
        return found

    async def batch_status(self, job_id: str) -> BatchJobStatus:
        job = await E.sdk_call(lambda: self.client().messages.batches.retrieve(job_id), _typed)
        if job.processing_status != "ended":
            return BatchJobStatus("running", job.processing_status)
        c = job.request_counts
        detail = "cancelled" if job.cancel_initiated_at else "expired" if c.expired else "completed"
        return BatchJobStatus("ended", detail)

    async def batch_results(self, job_id: str) -> BatchResults:
        out: BatchResults = {}
        try:
            async for row in await self.client().messages.batches.results(job_id):
                result = row.result
                if result.type == "succeeded":
                    try:
                        out[row.custom_id] = self._completions(result.message)
                    except E.LLMError as exc:
                        out[row.custom_id] = exc
                elif result.type == "errored":
                    err = result.error.error
                    status = {"invalid_request_error": 400, "authentication_error": 401, "permission_error": 403,
                              "not_found_error": 404, "rate_limit_error": 429, "overloaded_error": 529,
                              "timeout_error": 504}.get(err.type, 500)
                    message = f"anthropic batch item: {err.message}"
                    out[row.custom_id] = (E.ServerError(message, status=529) if status == 529
                                          else E.from_status(status, message))
                # canceled, expired: never ran; absent, so they are submitted again
        except E.LLMError:
            raise
        except Exception as exc:
            raise _typed(exc) from None
        return out

    async def batch_cancel(self, job_id: str) -> None:
        await E.sdk_call(lambda: self.client().messages.batches.cancel(job_id), _typed)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def _typed(exc: Exception) -> E.LLMError:
    """The typed error for an exception of the anthropic SDK."""
    import anthropic

    if isinstance(exc, E.LLMError):
        return exc
    if isinstance(exc, (anthropic.APITimeoutError, anthropic.APIConnectionError)):
        return E.transport_error(exc, "anthropic")
    if isinstance(exc, anthropic.APIStatusError):
        retry_after = E.parse_retry_after(exc.response.headers.get("retry-after"))
        if exc.status_code == 529:  # overloaded: a server-side condition, worth a retry
            return E.ServerError(f"anthropic: {exc.message}", status=529, retry_after=retry_after)
        return E.from_status(exc.status_code, f"anthropic: {exc.message}", retry_after)
    if isinstance(exc, (anthropic.APIResponseValidationError, ValueError)):
        return E.MalformedResponseError(f"anthropic: malformed response: {exc}")
    raise exc
