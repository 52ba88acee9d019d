"""The contract every chat provider plugin implements."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import AuthError, LLMError, register_secret
from .types import Completion, ProviderCall

if TYPE_CHECKING:
    from ..config.schema import EndpointConfig


@dataclass(frozen=True)
class BatchJobStatus:
    """Where a vendor batch job stands. ``running``: keep polling; ``ended``: results can be read
    (completed, expired or cancelled: items without a result are resubmitted); ``failed``: the
    job as a whole was refused (``detail`` says why) and none of its items ran."""

    state: str
    detail: str = ""


BatchResults = dict[str, "list[Completion] | LLMError"]
# How far before a recorded submission ``batch_find`` looks (clock skew, a slow commit).
FIND_WINDOW_S = 600.0


class ChatProvider(ABC):
    """Turns a :class:`ProviderCall` into completions, raising the typed errors of
    :mod:`music_core.llm.errors`. Import the SDK inside methods, never at module level, so
    that ``music --help`` stays fast. Disable the SDK's own retries: the execution layer
    retries, so that backoff, rate limits and wire counts are all in one place.

    Subclasses set ``name``; ``supports_seed = True`` when the API takes a sampling seed (each
    sample index is then sent as its own request with seed ``base + index``);
    ``supports_n = True`` when it can return several samples in one call (used only without a
    seed); ``supports_logprobs = True`` when it honours ``SamplingParams.top_logprobs`` (fills
    ``Completion.top_logprobs``); ``transport_options`` names the endpoint options that cannot change an answer
    (everything else in ``options`` is part of the cache key).

    ``supports_batch = True`` when the vendor has a batch API: the provider then implements the
    four ``batch_*`` methods below and an endpoint can run with ``mode: batch``. Each item's
    answer must be what :meth:`generate` would return for the same call (share the request
    builder and the response parser), so that batch and online runs make the same pairs.
    """

    name: ClassVar[str] = ""
    supports_n: ClassVar[bool] = False
    supports_seed: ClassVar[bool] = False
    supports_logprobs: ClassVar[bool] = False
    transport_options: ClassVar[frozenset[str]] = frozenset()
    #: a dataclass of the endpoint options this provider reads (``models.<name>.options``), made
    #: with ``music_core.config.schema.option``; the config loader refuses any other key, naming it.
    #: None: the options are free-form (not checked)
    options_class: ClassVar[type | None] = None
    default_api_key_env: ClassVar[str | None] = None
    requires_api_key: ClassVar[bool] = True
    enforce_timeout: ClassVar[bool] = True  # False for in-process models that queue requests
    supports_batch: ClassVar[bool] = False
    batch_limit_requests: ClassVar[int] = 10_000  # the vendor's most requests in one job
    batch_limit_bytes: ClassVar[int] = 100 * 2**20  # and its largest job input

    def __init__(self, endpoint: EndpointConfig):
        self.endpoint = endpoint

    def api_key(self) -> str | None:
        """The key from the environment variable the endpoint names (or the provider's usual
        one). Keys are never read from config files, so they never reach logs or caches."""
        var = self.endpoint.api_key_env or self.default_api_key_env
        key = os.environ.get(var) if var else None
        register_secret(key)  # a server that echoes it back never gets it into a message
        if not key and self.requires_api_key and var:
            raise AuthError(f"{self.name}: environment variable {var} is not set")
        return key

    def check_credentials(self) -> None:
        """Raise now what would fail every call (AuthError for a missing key variable, a
        BadRequestError for a setting the API refuses): called before any work starts."""
        self.api_key()

    def warm_up(self) -> None:  # noqa: B027 (optional hook)
        """Build clients and import the SDK. Called once before the first call's timeout starts,
        so that a cold import is not mistaken for a slow server."""

    def cache_identity(self) -> dict[str, Any]:
        """What names this endpoint's answers in the cache: everything that can change one."""
        opts = {k: v for k, v in (self.endpoint.options or {}).items() if k not in self.transport_options}
        return {"provider": self.name, "model": self.endpoint.model, "base_url": self.endpoint.base_url,
                "options": opts}

    @abstractmethod
    async def generate(self, call: ProviderCall) -> list[Completion]:
        """Return exactly ``call.n`` completions (raise EmptyResponseError rather than fewer)."""

    def count_tokens(self, text: str) -> int:
        """A cheap estimate for token budgets (about four characters a token)."""
        return max(1, len(text) // 4)

    def batch_item_bytes(self, call: ProviderCall) -> int:
        """About how many bytes this call adds to a job's input (for the vendor's size limit)."""
        return 400 + sum(len(m["content"].encode()) + 40 for m in call.messages)

    async def batch_submit(self, items: list[tuple[str, ProviderCall]], label: str) -> str:
        """Create one vendor batch job of ``(custom_id, call)`` items; return the job's id. Tag
        the job with ``label`` where the vendor keeps one (metadata, a display name), so that
        :meth:`batch_find` can find it. Raise the typed errors of :mod:`music_core.llm.errors`."""
        raise NotImplementedError(f"{self.name}: no batch API (supports_batch is False)")

    async def batch_find(self, label: str, since: float, n_items: int) -> list[str]:
        """Ids of jobs that may be the submission ``label`` (``n_items`` requests, sent after
        ``since``, a Unix time): asked when a run was interrupted before it recorded the id.
        The default finds none, and the items are sent again."""
        return []

    async def batch_status(self, job_id: str) -> BatchJobStatus:
        raise NotImplementedError(f"{self.name}: no batch API")

    async def batch_results(self, job_id: str) -> BatchResults:
        """The answers of an ended job by custom_id: the item's completions, or the typed error
        it failed with. Items the job never ran (expired, cancelled) are simply absent."""
        raise NotImplementedError(f"{self.name}: no batch API")

    async def batch_cancel(self, job_id: str) -> None:
        raise NotImplementedError(f"{self.name}: no batch API")

    async def aclose(self) -> None:  # noqa: B027 (optional hook)
        """Release clients and threads."""
