"""Typed LLM errors. Providers map their SDK's exceptions onto these; the execution layer
retries only the ``retryable`` ones (429, 5xx, timeouts, dropped connections)."""

from __future__ import annotations

from ..errors import MusicError


class LLMError(MusicError):
    retryable = False
    kind = "error"

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class RateLimitedError(LLMError):
    retryable, kind = True, "rate_limited"


class LLMTimeoutError(LLMError):
    retryable, kind = True, "timeout"


class ServerError(LLMError):
    retryable, kind = True, "server_error"


class LLMConnectionError(LLMError):
    retryable, kind = True, "connection"


class BadRequestError(LLMError):
    kind = "bad_request"


class AuthError(LLMError):
    kind = "auth"


class SafetyBlockedError(LLMError):
    kind = "safety_blocked"


class EmptyResponseError(LLMError):
    kind = "empty_response"


def from_status(status: int, message: str, retry_after: float | None = None) -> LLMError:
    """The typed error for an HTTP status, for providers whose SDK gives only a code."""
    if status == 429:
        return RateLimitedError(message, status=status, retry_after=retry_after)
    if status in (401, 403):
        return AuthError(message, status=status)
    if status == 408:
        return LLMTimeoutError(message, status=status)
    if status >= 500:
        return ServerError(message, status=status, retry_after=retry_after)
    return BadRequestError(message, status=status)


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
