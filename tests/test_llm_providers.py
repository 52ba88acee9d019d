"""Every provider SDK driven for real against a loopback server that speaks its REST API."""

from __future__ import annotations

import asyncio
import time

import pytest
from llm_helpers import KEY, PROVIDERS, endpoint, server_for

from music_core.llm import errors as E
from music_core.llm.cache import CallCache
from music_core.llm.executor import RoleUsage
from music_core.testing import FaultPlan

ALL = sorted(PROVIDERS)


@pytest.fixture(autouse=True)
def keys(monkeypatch):
    for *_, env in PROVIDERS.values():
        monkeypatch.setenv(env, KEY)


def chat(ep, text="hello", n=1, **kw):
    usage = RoleUsage()

    async def go():
        try:
            return await ep.chat([{"role": "system", "content": "be brief"}, {"role": "user", "content": text}],
                                 usage, n=n, **kw)
        finally:
            await ep.provider.aclose()

    return asyncio.run(go()), usage


@pytest.mark.parametrize("provider", ALL)
def test_success_with_samples_and_usage(provider):
    with server_for(provider) as srv:
        comps, usage = chat(endpoint(provider, srv), n=2)
    assert [c.text.startswith("echo") and "hello" in c.text for c in comps] == [True, True]
    assert usage.completion_tokens == 10 and usage.prompt_tokens > 0
    # each sample index is its own request (with its own seed where the API takes one)
    assert usage.wire_calls == 2 == len(srv.requests)
    assert comps[0].text != comps[1].text


@pytest.mark.parametrize("provider", ALL)
def test_429_honours_retry_after(provider):
    with server_for(provider, faults=FaultPlan(script=["429", None], retry_after_s=0.4)) as srv:
        t0 = time.monotonic()
        comps, usage = chat(endpoint(provider, srv))
        elapsed = time.monotonic() - t0
    assert comps[0].text.startswith("echo")
    assert usage.retries == 1 and usage.errors == {"rate_limited": 1}
    assert elapsed >= 0.4


@pytest.mark.parametrize("provider", ALL)
@pytest.mark.parametrize("fault,kind", [("500", "server_error"), ("timeout", "timeout"),
                                        ("drop", "connection"), ("malformed", "malformed")])
def test_retryable_faults_are_retried(provider, fault, kind):
    plan = FaultPlan(script=[fault, None], hang_s=5)
    with server_for(provider, faults=plan) as srv:
        comps, usage = chat(endpoint(provider, srv, timeout_s=0.5))
    assert comps[0].text.startswith("echo") and len(srv.requests) == 2
    if fault == "drop":
        # aiohttp re-sends once on its own when a kept-alive connection drops, and some SDK
        # transports report a drop as a timeout: either way nothing is lost.
        assert set(usage.errors) <= {"connection", "timeout"}
    else:
        assert usage.errors == {kind: 1} and usage.wire_calls == 2


@pytest.mark.parametrize("provider", ALL)
def test_retries_run_out_into_a_typed_error(provider):
    with server_for(provider, faults=FaultPlan(script=["500"] * 10)) as srv:
        with pytest.raises(E.ServerError):
            chat(endpoint(provider, srv, max_retries=3))
        assert len(srv.requests) == 4


@pytest.mark.parametrize("provider", ALL)
@pytest.mark.parametrize("magic,error", [("[[safety]]", E.SafetyBlockedError), ("[[empty]]", E.EmptyResponseError)])
def test_safety_and_empty_are_typed_and_not_retried(provider, magic, error):
    with server_for(provider) as srv:
        with pytest.raises(error):
            chat(endpoint(provider, srv), text=f"please {magic}")
        assert len(srv.requests) == 1


def test_gemini_candidate_safety_block():
    with server_for("gemini") as srv:
        with pytest.raises(E.SafetyBlockedError, match="SAFETY"):
            chat(endpoint("gemini", srv), text="[[safety-candidate]]")


@pytest.mark.parametrize("provider", ALL)
def test_bad_request_before_any_answer_stops_the_endpoint(provider):
    """A 400 on an endpoint that never answered is a setting the server refuses: fatal, once."""
    with server_for(provider) as srv:
        ep = endpoint(provider, srv, model="bad-model")
        with pytest.raises(E.EndpointFatalError) as err:
            chat(ep)
        assert isinstance(err.value.cause, E.BadRequestError) and "bad-model" in str(err.value)
        with pytest.raises(E.EndpointFatalError):
            chat(ep, text="another prompt")
        assert len(srv.requests) == 1  # no call after the first fatal answer


@pytest.mark.parametrize("provider", ALL)
def test_bad_request_after_answers_is_one_requests_failure(provider):
    with server_for(provider) as srv:
        ep = endpoint(provider, srv)
        chat(ep)
        with pytest.raises(E.BadRequestError):
            chat(ep, text="[[bad-request]]")
        chat(ep, text="still serving")
        assert len(srv.requests) == 3


@pytest.mark.parametrize("provider", ALL)
def test_missing_key_is_an_auth_error_naming_the_variable(provider, monkeypatch):
    env = PROVIDERS[provider][-1]
    monkeypatch.delenv(env)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    with server_for(provider) as srv:
        with pytest.raises(E.EndpointFatalError, match=env) as err:
            chat(endpoint(provider, srv))
        assert isinstance(err.value.cause, E.AuthError)
        assert len(srv.requests) == 0


@pytest.mark.parametrize("provider", ALL)
def test_same_request_twice_reaches_the_wire_once_and_key_never_stored(provider, tmp_path):
    cache = CallCache(tmp_path / "cache.sqlite")
    with server_for(provider) as srv:
        first, _ = chat(endpoint(provider, srv, cache=cache))
        second, usage = chat(endpoint(provider, srv, cache=cache))
        assert len(srv.requests) == 1
    assert second[0].cached and second[0].text == first[0].text and usage.wire_calls == 0
    cache.close()
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert KEY.encode() not in f.read_bytes(), f


def test_concurrent_identical_requests_share_one_wire_call():
    with server_for("openai", latency_s=0.1) as srv:
        ep = endpoint("openai", srv)
        usage = RoleUsage()

        async def go():
            msgs = [{"role": "user", "content": "same"}]
            try:
                return await asyncio.gather(*(ep.chat(msgs, usage) for _ in range(10)))
            finally:
                await ep.provider.aclose()

        results = asyncio.run(go())
        assert len(srv.requests) == 1 and len({r[0].text for r in results}) == 1
