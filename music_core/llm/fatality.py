"""Endpoint fatality: when an error is the endpoint's, not the request's, and stops the run.

A key that is not set, a wrong base_url, a model the server does not serve: retrying or going
on would only repeat the error for every request, so the first one ends the run, naming the
endpoint. Kept on its own because the rule reads the endpoint's history (has it ever answered?)
and its replicas, and it is the one place to read when a run stops or fails to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import (
    BadRequestError,
    EndpointFatalError,
    LLMError,
    MalformedResponseError,
    UnreachableError,
)

if TYPE_CHECKING:
    from ..config.schema import EndpointConfig
    from .replicas import Replica


def is_fatal(exc: LLMError, *, answered: int, replicas: list[Replica], retries_spent: bool) -> bool:
    """Is this error the endpoint's, not the request's? Then it stops the run.
    ``answered``: calls the endpoint has answered so far; ``retries_spent``: the call will not
    be tried again."""
    if exc.endpoint_fault:
        return True
    # Before the endpoint has ever answered, a refused connection is a wrong base_url and a
    # 400 a parameter the server does not take; after, they are an outage and one bad prompt.
    # With replicas, one that refuses is cooled down; only all of them refusing is fatal.
    # Nothing but malformed answers through every retry is not an API at that base_url.
    if answered == 0 and isinstance(exc, UnreachableError) and len(replicas) > 1:
        return all(r.unreachable for r in replicas)
    if answered == 0 and retries_spent and isinstance(exc, MalformedResponseError):
        return True
    return answered == 0 and isinstance(exc, (UnreachableError, BadRequestError))


def fatal_error(name: str, config: EndpointConfig, exc: LLMError) -> EndpointFatalError:
    """The error that stops the run, naming the endpoint, its provider, model and base_url."""
    return EndpointFatalError(exc, endpoint=name, provider=config.provider, model=config.model,
                              base_url=config.base_url)
