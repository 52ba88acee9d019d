"""A lean transport for OpenAI-compatible servers (vLLM, SGLang, llama.cpp, Ollama): one aiohttp
session posting ``/chat/completions`` directly.

Why: at 64 requests in flight the official SDK spends about a millisecond of client CPU on each
call (building the request through its option models, deep copies and header handling), which is
most of what one Python core can give; a raw POST costs a fraction of that
(``benchmarks/llm_throughput.py`` measures both). The wire protocol is the same, errors map onto
the same typed errors (status codes, Retry-After, a refused or dropped connection, a malformed
body), and the SDK stays the default for api.openai.com (``options.http``)."""

from __future__ import annotations

import json
from typing import Any

from music_core.llm import errors as E

USER_AGENT = "music-rm (OpenAI-compatible raw transport)"


class RawTransport:
    def __init__(self, base_url: str, api_key: str, *, timeout_s: float, connections: int):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.headers = {"authorization": f"Bearer {api_key}", "content-type": "application/json",
                        "accept": "application/json", "user-agent": USER_AGENT}
        self.timeout_s = timeout_s
        self.connections = connections
        self._session: Any = None
        self._proxy: str | None = None

    def session(self) -> Any:
        if self._session is None:
            import aiohttp

            # trust_env=False: aiohttp would look up netrc and proxies in a thread on every
            # request (two thread hops a call); the proxy is resolved once instead, below.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.connections, limit_per_host=self.connections),
                timeout=aiohttp.ClientTimeout(total=self.timeout_s), trust_env=False)
            self._proxy = _proxy_for(self.url)
        return self._session

    async def post(self, body: dict[str, Any]) -> Any:
        import aiohttp

        data = json.dumps(body, ensure_ascii=False).encode()
        try:
            session = self.session()
            async with session.post(self.url, data=data, headers=self.headers, allow_redirects=False,
                                    proxy=self._proxy) as resp:
                raw = await resp.read()
                status = resp.status
                retry_after = E.parse_retry_after(resp.headers.get("retry-after"))
                content_type = resp.headers.get("content-type", "")
                location = resp.headers.get("location", "")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise E.transport_error(exc, "openai") from None
        if status >= 400:
            raise _status_error(status, raw, retry_after)
        if 300 <= status < 400:  # never followed: a POST redirected (http -> https, a moved path) is a wrong base_url
            raise E.NotFoundError(f"openai: {self.url} answered HTTP {status}, a redirect to {location or '(no location)'}: "
                                  f"set base_url to where it points", status=status)
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise E.MalformedResponseError(f"openai: malformed response (HTTP {status}, {content_type or 'no content type'}): {exc}; "
                                           f"it begins {raw[:80]!r}") from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _proxy_for(url: str) -> str | None:
    """The HTTP(S)_PROXY that applies to ``url`` (honouring NO_PROXY), as httpx would use."""
    import urllib.request
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme)


def _status_error(status: int, raw: bytes, retry_after: float | None) -> E.LLMError:
    """The typed error for an error answer, with the server's own message when it gave one."""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message = str(error.get("message") or error)
        code = str(error.get("code") or "")
    else:
        message = str(error or (body.get("message") if isinstance(body, dict) else None) or raw[:200].decode(errors="replace"))
        code = ""
    if "content_filter" in code or "content_policy" in code:
        return E.SafetyBlockedError(f"openai: {message}", status=status)
    return E.from_status(status, f"openai: Error code: {status} - {message}", retry_after)
