"""Typed LLM errors. Providers map their SDK's exceptions onto these; the execution layer
retries only the ``retryable`` ones (429, 5xx, timeouts, dropped connections).

Three fates, decided here and nowhere else:

- **transient** (``retryable``): retried with backoff; if the retries run out the work is left
  undone, never booked as finished, and the next run retries it.
- **final for one request** (safety blocks, empty answers, a 400 for one prompt): the content
  cannot be produced; the rollout that needed it is recorded as failed, with the reason.
- **fatal for the endpoint** (:class:`EndpointFatalError`): a missing key, 401/403, an unknown
  model (404), an unreachable ``base_url``, or a 400 before the endpoint ever answered. The first
  one stops the whole run: no further call goes to that endpoint.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..errors import MusicError

T = TypeVar("T")

# Keys read from the environment this process (ChatProvider.api_key registers them): a server
# may echo one back in an error body, and error messages reach the terminal, errors files and
# reports. Every LLMError's message is redacted when it is made.
_SECRETS: set[str] = set()
_BEARER = re.compile(r"(Bearer\s+)[^\s\"',;)\]}]+", re.IGNORECASE)
REDACTED = "[redacted]"


def register_secret(value: str | None) -> None:
    """Never show ``value`` in an error message (too short a value would redact ordinary words)."""
    if value and len(value) >= 8:
        _SECRETS.add(value)


def redact(text: str) -> str:
    """``text`` without any registered key, and without whatever follows ``Bearer``."""
    text = _BEARER.sub(r"\1" + REDACTED, text)
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class LLMError(MusicError):
    retryable = False
    kind = "error"
    #: True when the error says the endpoint itself is misconfigured (never one request's fault)
    endpoint_fault = False
    #: set on an error one replica of several gave: the call goes to another replica at once
    replica_fault = False

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(redact(message))
        self.status = status
        self.retry_after = retry_after


class RateLimitedError(LLMError):
    retryable, kind = True, "rate_limited"


class LLMTimeoutError(LLMError):
    retryable, kind = True, "timeout"


class ServerError(LLMError):
    retryable, kind = True, "server_error"


class MalformedResponseError(ServerError):
    """An answer that is not what the API returns (HTML, truncated JSON, no choices). Retried, as
    a glitch; but an endpoint that has never answered well and gives only these after every
    retry is misconfigured (a base_url pointing at a web page, say) and stops the run."""

    kind = "malformed"


class LLMConnectionError(LLMError):
    retryable, kind = True, "connection"


class UnreachableError(LLMConnectionError):
    """Connection refused or the host name does not resolve. Fatal before the endpoint has
    ever answered (a wrong ``base_url``); transient after (a server restarting)."""

    kind = "unreachable"


class BatchUnfinishedError(LLMError):
    """A batch job ended (expired, cancelled) without running this item: it is resubmitted."""

    retryable, kind = True, "batch_unfinished"


class BadRequestError(LLMError):
    kind = "bad_request"


class AuthError(LLMError):
    kind, endpoint_fault = "auth", True


class NotFoundError(LLMError):
    """404: an unknown model or a wrong path under ``base_url``."""

    kind, endpoint_fault = "not_found", True


class SafetyBlockedError(LLMError):
    kind = "safety_blocked"


class EmptyResponseError(LLMError):
    kind = "empty_response"


class EndpointFatalError(LLMError):
    """The endpoint cannot serve this run; raised for the first such error and for every later
    call to the same endpoint, without a wire call. ``role`` is filled in by the role client."""

    kind = "endpoint"
    exit_code = 5

    def __init__(self, cause: LLMError, *, endpoint: str, provider: str, model: str, base_url: str | None,
                 role: str | None = None):
        self.cause, self.endpoint, self.provider, self.model, self.base_url = cause, endpoint, provider, model, base_url
        self.role = role
        super().__init__(self._text(), status=cause.status)

    def _text(self) -> str:
        status = f"HTTP {self.cause.status}" if self.cause.status else self.cause.kind
        role = f"role {self.role}, " if self.role else ""
        return (f"endpoint {self.endpoint!r} ({role}provider {self.provider}, model {self.model}, "
                f"base_url {self.base_url or 'the provider default'}) failed with {status}: {self.cause}. "
                f"Fix models.{self.endpoint} (or the environment) and rerun; nothing more was sent to it")

    def for_role(self, role: str) -> EndpointFatalError:
        if self.role is None:
            self.role = role
            self.args = (self._text(),)
        return self


def from_status(status: int, message: str, retry_after: float | None = None) -> LLMError:
    """The typed error for an HTTP status, for providers whose SDK gives only a code."""
    if status == 429:
        return RateLimitedError(message, status=status, retry_after=retry_after)
    if status in (401, 403):
        return AuthError(message, status=status)
    if status == 404:
        return NotFoundError(message, status=status)
    if status in (408, 504):
        return LLMTimeoutError(message, status=status, retry_after=retry_after)
    if status >= 500:
        return ServerError(message, status=status, retry_after=retry_after)
    return BadRequestError(message, status=status)


def transport_error(exc: BaseException, provider: str) -> LLMError:
    """Classify a transport failure by walking its cause chain: a refused connection or an
    unknown host is :class:`UnreachableError` (whatever the SDK called it: the openai SDK's
    aiohttp transport reports a refused connection as a timeout), a dropped connection is
    :class:`LLMConnectionError`, and anything slower is a timeout."""
    import socket

    chain, seen = [], set()
    x: BaseException | None = exc
    while x is not None and id(x) not in seen:
        seen.add(id(x))
        chain.append(x)
        x = x.__cause__ or x.__context__
    text = " | ".join(f"{type(e).__name__}: {e}" for e in chain)
    root = chain[-1]
    if any(isinstance(e, (ConnectionRefusedError, socket.gaierror)) for e in chain):
        return UnreachableError(f"{provider}: cannot connect ({type(root).__name__}: {root})")
    low = text.lower()
    if "disconnect" in low or any(isinstance(e, (ConnectionResetError, BrokenPipeError)) for e in chain) \
            or any(w in type(e).__name__ for e in chain for w in ("RemoteProtocol", "ReadError", "WriteError",
                                                                    "Disconnected", "ServerDisconnected")):
        return LLMConnectionError(f"{provider}: connection dropped ({type(root).__name__}: {root})")
    if any(isinstance(e, TimeoutError) or "Timeout" in type(e).__name__ for e in chain):
        return LLMTimeoutError(f"{provider}: no answer in time ({type(root).__name__})")
    return LLMConnectionError(f"{provider}: {type(root).__name__}: {root}")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    import datetime as dt
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def parse_duration(value: str | None) -> float | None:
    """Seconds from a protobuf Duration string (``"37s"``, ``"1.5s"``), as in Google's RetryInfo."""
    if not value or not isinstance(value, str) or not value.endswith("s"):
        return None
    try:
        return max(0.0, float(value[:-1]))
    except ValueError:
        return None


async def sdk_call(make: Callable[[], Awaitable[T]], typed: Callable[[Exception], LLMError]) -> T:
    """Await ``make()``; whatever the SDK raises comes out as ``typed(exc)``, a typed error."""
    try:
        return await make()
    except Exception as exc:
        raise typed(exc) from None
