"""Third-party OpenAI-compatible servers (vLLM, llama.cpp, Ollama, SGLang, proxies) answer in
shapes api.openai.com never does: choices without an index, content as a list of parts, usage
with nulls, reasoning inside the content, an error object in a 200, HTML from a wrong path, a
redirect. Each is parsed or typed, never a crash; through the raw transport and the SDK."""

from __future__ import annotations

import asyncio
import json

import pytest
from llm_helpers import KEY, endpoint

from music_core.llm import errors as E
from music_core.llm.executor import RoleUsage
from music_core.testing import LoopbackServer, Request, Response

TRANSPORTS = ["openai", "openai-sdk"]


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


def serving(*bodies):
    """A server answering the k-th request with bodies[k] (the last one repeats)."""
    seen: list[Request] = []

    def handle(req: Request) -> Response:
        seen.append(req)
        body = bodies[min(len(seen), len(bodies)) - 1]
        return body if isinstance(body, Response) else Response(200, body)

    return LoopbackServer(handle)


def ask(ep, n=1):
    async def go():
        try:
            return await ep.chat([{"role": "user", "content": "hi"}], RoleUsage(), n=n)
        finally:
            await ep.provider.aclose()

    return asyncio.run(go())


def completion(**choice):
    return {"choices": [{"finish_reason": "stop", **choice}]}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("body,texts", [
    (completion(message={"content": [{"type": "text", "text": "hel"}, {"type": "text", "text": "lo"}]}), ["hello"]),
    ({"choices": [{"index": None, "message": {"content": "a"}}, {"message": {"content": "b"}}],
      "usage": {"prompt_tokens": None, "completion_tokens": "7"}}, ["a"]),
    (completion(message={"content": "<think>the user greets me</think>\n\nHello!"}), ["Hello!"]),
    (completion(text="completions-style"), ["completions-style"]),
    (completion(message={"content": "ok"}, logprobs={"content": [None, 3, {"token": "ok", "logprob": "x"}]}), ["ok"]),
], ids=["content-parts", "no-index-null-usage", "think-block", "text-field", "odd-logprobs"])
def test_shapes_compatible_servers_send_are_parsed(transport, body, texts):
    with serving(body) as srv:
        got = ask(endpoint(transport, srv))
    assert [c.text for c in got] == texts


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("body,error", [
    ({"choices": [None]}, E.MalformedResponseError),
    (completion(message="hi"), E.MalformedResponseError),
    ({"error": {"message": "upstream model crashed", "code": "upstream_error"}}, E.ServerError),
    (completion(message={"content": "<think>never closed"}), E.EmptyResponseError),
], ids=["null-choice", "string-message", "error-in-200", "unclosed-think"])
def test_shapes_that_are_no_answer_are_typed_errors_after_an_answer(transport, body, error):
    good = completion(message={"content": "fine"})
    with serving(good, body) as srv:
        ep = endpoint(transport, srv, max_retries=2)
        ask(ep)
        with pytest.raises(error) as got:
            ask(ep)
        assert not isinstance(got.value, E.EndpointFatalError)  # it answered before: one request's failure


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_error_object_in_a_200_with_an_http_code_is_that_status(transport):
    """OpenRouter and LiteLLM proxies answer a rate limit as 200 + {"error": {"code": 429}}: retried."""
    body = {"error": {"message": "Rate limit exceeded: free-models-per-min", "code": 429}}
    with serving(body, body, completion(message={"content": "after the limit"})) as srv:
        ep = endpoint(transport, srv, max_retries=3)
        assert ask(ep)[0].text == "after the limit"
        assert len(srv.requests) == 3


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_server_that_answers_only_html_stops_the_endpoint_after_its_retries(transport):
    """base_url pointing at a web page: 200 with HTML. A glitch is retried; nothing but that, on an
    endpoint that never answered, is a misconfiguration and stops the run, naming the endpoint."""
    page = Response(200, b"<!doctype html><html><body>Welcome to the dashboard</body></html>",
                    {"content-type": "text/html"})
    with serving(page) as srv:
        ep = endpoint(transport, srv, max_retries=2)
        with pytest.raises(E.EndpointFatalError) as err:
            ask(ep)
        assert isinstance(err.value.cause, E.MalformedResponseError) and "malformed" in str(err.value)
        assert len(srv.requests) == 3
        with pytest.raises(E.EndpointFatalError):
            ask(ep)
        assert len(srv.requests) == 3  # nothing more was sent


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_malformed_glitch_on_a_fresh_endpoint_is_retried(transport):
    truncated = Response(200, json.dumps(completion(message={"content": "cut"})).encode()[:25])
    with serving(truncated, completion(message={"content": "whole"})) as srv:
        assert ask(endpoint(transport, srv, max_retries=2))[0].text == "whole"


def test_a_redirect_is_a_wrong_base_url_not_a_retry():
    """A POST redirected (http -> https, a moved path) is never followed: it names where it points."""
    moved = Response(308, b"", {"location": "https://models.example.org/v1/chat/completions"})
    with serving(moved) as srv:
        ep = endpoint("openai", srv)
        with pytest.raises(E.EndpointFatalError, match="redirect to https://models.example.org"):
            ask(ep)
        assert len(srv.requests) == 1
