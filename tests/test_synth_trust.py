"""Synthesis you can trust (issue 10): no failure booked as done, fail-fast on misconfiguration,
distinct and reproducible samples, the method never silently replaced, bad input refused."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from llm_helpers import KEY
from synth_helpers import scripted_reply, synth_overrides

from music_core.testing import FaultPlan, LoopbackServer, Response

ENV = {**os.environ, "TEST_KEY": KEY}


def synth_cmd(out_dir, base_url, *extra, provider="openai", key_env="TEST_KEY"):
    return [sys.executable, "-m", "music_core", "synth", *synth_overrides(out_dir, base_url, provider, key_env),
            "seeds.limit=8", "synth.turns=2", "synth.concurrency=4", *extra]


def run(cmd, env=ENV, timeout=120):
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def pairs_of(path):
    return [json.loads(line) for line in open(path)] if os.path.exists(path) else []


def comparable(pairs):
    """Everything a pair holds: ids, conversations and provenance (tokens included)."""
    return [(p["id"], p["chosen"], p["rejected"], p["meta"]) for p in pairs]


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---- 1, 2: transient failures are never final, and the exit status says so -----------------

def test_outage_leaves_pairs_missing_not_failed_and_rerun_makes_them(tmp_path):
    from music_openai.testing import openai_server

    with openai_server(reply=scripted_reply, seeded=True) as ref:
        assert run(synth_cmd(tmp_path / "ref", ref.url + "/v1")).returncode == 0
    reference = pairs_of(tmp_path / "ref" / "synth" / "pairs.jsonl")
    assert len(reference) == 8

    out = tmp_path / "run" / "synth" / "pairs.jsonl"
    with openai_server(reply=scripted_reply, seeded=True, faults=FaultPlan(outage_s=3.0)) as srv:
        first = run(synth_cmd(tmp_path / "run", srv.url + "/v1", "models.sim.max_retries=1"))
        assert first.returncode == 75, first.stderr
        assert "8 of 8 pairs are missing" in first.stderr and "rerun the same command" in first.stderr
        assert "server_error" in first.stderr
        errors = tmp_path / "run" / "synth" / "pairs.errors.jsonl"
        assert not errors.exists() or errors.read_text() == ""  # nothing booked as a final failure
        time.sleep(max(0.0, 3.2 - (time.monotonic() - srv.started_at[0])))
        second = run(synth_cmd(tmp_path / "run", srv.url + "/v1"))
        assert second.returncode == 0, second.stderr
    assert comparable(pairs_of(out)) == comparable(reference)


def test_thirty_percent_faults_and_an_outage_end_equal_to_a_fault_free_run(tmp_path):
    """The issue's acceptance run: 429 with Retry-After, 500, stalls and dropped connections on
    30% of requests plus a 10 s outage at the start; the first run exits non-zero naming what is
    missing, reruns complete it, and the pairs equal a fault-free run's, with no duplicate line."""
    from music_openai.testing import openai_server

    extra = ("seeds.limit=10", "models.sim.timeout_s=0.5")
    with openai_server(reply=scripted_reply, seeded=True) as ref:
        assert run(synth_cmd(tmp_path / "ref", ref.url + "/v1", *extra)).returncode == 0
    reference = pairs_of(tmp_path / "ref" / "synth" / "pairs.jsonl")
    plan = FaultPlan(rate=0.3, kinds=("429", "500", "timeout", "drop"), retry_after_s=0.05, hang_s=2.0, seed=3,
                     outage_s=10.0)
    out = tmp_path / "run" / "synth" / "pairs.jsonl"
    with openai_server(reply=scripted_reply, seeded=True, faults=plan) as srv:
        first = run(synth_cmd(tmp_path / "run", srv.url + "/v1", *extra, "models.sim.max_retries=2",
                              "models.sim.retry_backoff_s=0.5"))
        assert first.returncode == 75 and "missing after transient failures" in first.stderr, first.stderr
        time.sleep(max(0.0, 10.2 - (time.monotonic() - srv.started_at[0])))
        for _ in range(3):
            again = run(synth_cmd(tmp_path / "run", srv.url + "/v1", *extra, "models.sim.max_retries=8"))
            if again.returncode == 0:
                break
            assert again.returncode == 75, again.stderr
        assert again.returncode == 0, again.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == len(set(lines)) == 10
    assert comparable(pairs_of(out)) == comparable(reference)


def test_sigkill_twice_then_resume_equals_the_uninterrupted_run(tmp_path):
    from music_openai.testing import openai_server

    extra = ("seeds.limit=12", "synth.concurrency=2")
    with openai_server(reply=scripted_reply, seeded=True) as ref:
        assert run(synth_cmd(tmp_path / "ref", ref.url + "/v1", *extra)).returncode == 0
    reference = pairs_of(tmp_path / "ref" / "synth" / "pairs.jsonl")
    out = tmp_path / "run" / "synth" / "pairs.jsonl"
    with openai_server(reply=scripted_reply, seeded=True, latency_s=0.02) as srv:
        for at_least in (2, 6):
            proc = subprocess.Popen(synth_cmd(tmp_path / "run", srv.url + "/v1", *extra), env=ENV,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.time() + 60
            while time.time() < deadline and len(pairs_of(out)) < at_least:
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            assert at_least <= len(out.read_text().splitlines()) < 12, "the kill must land mid-run"
        assert run(synth_cmd(tmp_path / "run", srv.url + "/v1", *extra)).returncode == 0
    lines = out.read_text().splitlines()
    assert len(lines) == len(set(lines))
    assert comparable(pairs_of(out)) == comparable(reference)


# ---- 3: misconfiguration stops the run at once, naming the endpoint ------------------------

def _assert_fatal(proc, *words):
    assert proc.returncode == 5, (proc.returncode, proc.stderr)
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(line) == 1, proc.stderr
    for w in ("endpoint 'sim'", "provider openai", "model ", "base_url ", *words):
        assert w in line[0], (w, line[0])
    assert "Traceback" not in proc.stderr


def test_missing_key_variable_stops_before_any_call(tmp_path):
    from music_openai.testing import openai_server

    env = {k: v for k, v in ENV.items() if k != "TEST_KEY"}
    with openai_server(reply=scripted_reply) as srv:
        proc = run(synth_cmd(tmp_path, srv.url + "/v1"), env=env)
        assert len(srv.requests) == 0
    _assert_fatal(proc, "TEST_KEY", "role user_simulator")


@pytest.mark.parametrize("status,word", [(401, "HTTP 401"), (403, "HTTP 403")])
def test_refused_key_stops_the_run_within_seconds(tmp_path, status, word):
    def refuse(req):
        return Response(status, {"error": {"message": "invalid api key", "type": "invalid_request_error"}})

    with LoopbackServer(refuse) as srv:
        t0 = time.monotonic()
        proc = run(synth_cmd(tmp_path, srv.url + "/v1", "seeds.limit=16", "synth.concurrency=2"))
        elapsed = time.monotonic() - t0
        seen = len(srv.requests)
    _assert_fatal(proc, word, "role ")
    assert seen <= 4 and elapsed < 30  # two rollouts with two calls each in flight, then nothing more


def test_a_server_that_echoes_the_key_never_gets_it_into_a_message_or_a_file(tmp_path):
    """Some servers quote the Authorization header back in their errors: redacted everywhere."""
    from music_openai.testing import handle

    def echo_key(status):
        def answer(req):
            if status == 401 or len(seen) % 4 == 3:  # 400: one request in four, after answers
                seen.append(req)
                return Response(status, {"error": {"message": f"rejected header {req.headers.get('authorization')} "
                                                              f"(key {req.headers.get('authorization', '')[7:]})"}})
            seen.append(req)
            return handle(req, reply=scripted_reply)
        return answer

    for status in (401, 400):
        seen: list = []
        with LoopbackServer(echo_key(status)) as srv:
            proc = run(synth_cmd(tmp_path / str(status), srv.url + "/v1"))
        assert status != 401 or proc.returncode == 5, proc.stderr  # 400s are final for their rollouts only
        assert KEY not in proc.stderr + proc.stdout and "[redacted]" in proc.stderr + "".join(
            f.read_text() for f in (tmp_path / str(status)).rglob("*.jsonl")), proc.stderr[-500:]
        for f in (tmp_path / str(status)).rglob("*"):
            if f.is_file():
                assert KEY.encode() not in f.read_bytes(), f


def test_a_run_whose_seeds_mostly_end_as_final_errors_exits_6_keeping_what_it_made(tmp_path):
    """Final errors (a prompt the server refuses) are per seed; when more than synth.max_error_rate
    of the seeds end so, the run did not deliver what it was asked: exit 6, naming them."""
    from music_openai.testing import handle

    seen = [0]

    def refuse_some(req):
        seen[0] += 1
        if seen[0] % 4 == 3:
            return Response(400, {"error": {"message": "prompt refused"}})
        return handle(req, reply=scripted_reply)

    with LoopbackServer(refuse_some) as srv:
        proc = run(synth_cmd(tmp_path, srv.url + "/v1"))
        line = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode == 6 and "synth.max_error_rate" in line and "BadRequestError" in line, proc.stderr
        errors = pairs_of(tmp_path / "synth" / "pairs.errors.jsonl")
        assert len(errors) > 4 and len(errors) + len(pairs_of(tmp_path / "synth" / "pairs.jsonl")) <= 8
        accepted = run(synth_cmd(tmp_path, srv.url + "/v1", "synth.max_error_rate=1.0"))
    assert accepted.returncode == 0, accepted.stderr  # nothing redone: the same rows, accepted


def test_unknown_model_and_unreachable_base_url_are_fatal(tmp_path):
    from music_openai.testing import openai_server

    with openai_server(reply=scripted_reply) as srv:
        proc = run(synth_cmd(tmp_path / "a", srv.url + "/v1", "models.sim.model=missing-model"))
    _assert_fatal(proc, "HTTP 404", "missing-model")
    url = f"http://127.0.0.1:{free_port()}/v1"
    proc = run(synth_cmd(tmp_path / "b", url))
    _assert_fatal(proc, "unreachable", url)


def test_a_base_url_that_serves_a_web_page_stops_the_run_naming_it(tmp_path):
    """200 with HTML on every path (base_url without its /v1 in front of a web UI): each answer is
    retried as a glitch, and when nothing else ever comes the run stops, naming the endpoint."""
    def page(req):
        return Response(200, b"<!doctype html><title>Open WebUI</title>", {"content-type": "text/html"})

    with LoopbackServer(page) as srv:
        proc = run(synth_cmd(tmp_path, srv.url, "models.sim.max_retries=2", "models.sim.retry_backoff_s=0.01"))
        seen = len(srv.requests)
    _assert_fatal(proc, "malformed", "text/html")
    assert seen <= 8 * 3  # the calls in flight (4 rollouts, both branches), each with its retries, then nothing more
    assert not (tmp_path / "synth" / "pairs.jsonl").exists() or not pairs_of(tmp_path / "synth" / "pairs.jsonl")


def test_corrected_config_runs_after_a_fatal_stop(tmp_path):
    from music_openai.testing import openai_server

    with openai_server(reply=scripted_reply) as srv:
        bad = run(synth_cmd(tmp_path, srv.url + "/v1", "models.sim.model=missing-model"))
        assert bad.returncode == 5
        good = run(synth_cmd(tmp_path, srv.url + "/v1"))
    assert good.returncode == 0, good.stderr
    assert len(pairs_of(tmp_path / "synth" / "pairs.jsonl")) == 8


# ---- 4: every sample index is its own request -----------------------------------------------

@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_samples_are_distinct_on_a_seeded_server(provider, monkeypatch):
    import asyncio

    from llm_helpers import PROVIDERS, endpoint, server_for

    from music_core.llm.executor import RoleUsage

    monkeypatch.setenv(PROVIDERS[provider][-1], KEY)
    with server_for(provider, seeded=True) as srv:
        ep = endpoint(provider, srv, temperature=0.0)
        usage = RoleUsage()

        async def go():
            try:
                many = await ep.chat([{"role": "user", "content": "pick"}], usage, n=4)
                again = await ep.chat([{"role": "user", "content": "pick"}], usage, n=1, sample_index=1)
                return many, again
            finally:
                await ep.provider.aclose()

        many, again = asyncio.run(go())
        seeds = [json.loads(r.body).get("seed", (json.loads(r.body).get("generationConfig") or {}).get("seed"))
                 for r in srv.requests]
    assert len({c.text for c in many}) == 4  # four candidates, four answers
    assert sorted(seeds[:4]) == [0, 1, 2, 3]  # sample i went out with seed + i
    assert seeds[4] == 1 and again[0].text == many[1].text  # sample 1 is sample 1, however it is asked for


def test_best_of_n_candidates_differ_on_a_seeded_policy(tmp_path, plugins, monkeypatch):
    from music_openai.testing import openai_server

    from music_core.config import load_config
    from music_core.context import RunContext

    monkeypatch.setenv("TEST_KEY", KEY)
    with openai_server(reply=scripted_reply, seeded=True) as srv:
        cfg = load_config(None, synth_overrides(tmp_path, srv.url + "/v1", "openai", "TEST_KEY"))
        ctx = RunContext(cfg, plugins.registry)
        import asyncio

        async def go():
            try:
                return await ctx.role("policy").chat([{"role": "user", "content": "Plan a trip."}], n=4)
            finally:
                await ctx.aclose()

        comps = asyncio.run(go())
    assert len({c.text for c in comps}) == 4


# ---- 6: the cache key holds everything that changes an answer --------------------------------

@pytest.mark.parametrize("provider,field,value", [
    ("openai", "options", {"extra_body": {"top_k": 5}}),
    ("gemini", "options", {"thinking_budget": 0}),
    ("anthropic", "options", {"effort": "low"}),
    ("openai", "base_url", "other"),
])
def test_changing_what_shapes_an_answer_misses_the_cache(provider, field, value, tmp_path, monkeypatch):
    import asyncio

    from llm_helpers import PROVIDERS, endpoint, server_for

    from music_core.llm.cache import CallCache
    from music_core.llm.executor import RoleUsage

    monkeypatch.setenv(PROVIDERS[provider][-1], KEY)
    cache = CallCache(tmp_path / "c.sqlite")

    async def ask(ep):
        try:
            return await ep.chat([{"role": "user", "content": "hi"}], RoleUsage())
        finally:
            await ep.provider.aclose()

    with server_for(provider) as srv, server_for(provider) as other:
        asyncio.run(ask(endpoint(provider, srv, cache=cache)))
        asyncio.run(ask(endpoint(provider, srv, cache=cache)))  # same settings: the cache answers
        assert len(srv.requests) == 1
        if field == "base_url":
            ep = endpoint(provider, other, cache=cache)
        else:
            ep = endpoint(provider, srv, cache=cache, **{field: value})
        asyncio.run(ask(ep))
        assert len(srv.requests) + len(other.requests) == 2  # a changed setting went to the wire
    cache.close()


def test_anthropic_temperature_is_refused_before_any_call_not_dropped(tmp_path):
    from music_anthropic.testing import anthropic_server

    with anthropic_server(reply=scripted_reply) as srv:
        proc = run(synth_cmd(tmp_path, srv.url, "models.sim.temperature=0.2", provider="anthropic"))
        assert len(srv.requests) == 0
    assert proc.returncode == 5 and "temperature 0.2" in proc.stderr and "sampling_params" in proc.stderr


def test_anthropic_sampling_params_option_sends_temperature(monkeypatch):
    import asyncio

    from llm_helpers import endpoint, server_for

    from music_core.llm.executor import RoleUsage

    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    with server_for("anthropic") as srv:
        ep = endpoint("anthropic", srv, temperature=0.3, options={"sampling_params": True})

        async def go():
            try:
                return await ep.chat([{"role": "user", "content": "hi"}], RoleUsage())
            finally:
                await ep.provider.aclose()

        asyncio.run(go())
        assert json.loads(srv.requests[0].body)["temperature"] == 0.3


# ---- 7: limits hold at the server; Retry-After is capped; Gemini retries only through us -----

def test_rpm_holds_at_the_server_clock_in_every_window(monkeypatch):
    import asyncio

    from llm_helpers import endpoint, server_for

    from music_core.llm import wire
    from music_core.llm.executor import RoleUsage

    monkeypatch.setattr(wire, "MINUTE_S", 2.0)  # a "minute" of 2 s keeps the test short
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    plan = FaultPlan(rate=0.3, kinds=("429", "500"), retry_after_s=0.01, seed=1)
    with server_for("openai", latency_s=0.15, faults=plan) as srv:
        # rpm 15 is below one a rate window: the fine window must not round it up
        ep = endpoint("openai", srv, rpm=15, rate_window_s=0.05, concurrency=16, max_retries=8)
        usage = RoleUsage()

        async def go():
            try:
                await asyncio.gather(*(ep.chat([{"role": "user", "content": f"q{i}"}], usage) for i in range(30)))
            finally:
                await ep.provider.aclose()

        asyncio.run(go())
        stamps = sorted(srv.started_at)
    worst = max(sum(1 for t in stamps if s <= t < s + 2.0) for s in stamps)
    assert worst <= 15, worst


def test_retry_after_is_capped(monkeypatch):
    import asyncio

    from llm_helpers import endpoint, server_for

    from music_core.llm.executor import RoleUsage

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with server_for("openai", faults=FaultPlan(script=["429", None], retry_after_s=86400)) as srv:
        ep = endpoint("openai", srv, max_retry_after_s=0.3)

        async def go():
            try:
                return await ep.chat([{"role": "user", "content": "hi"}], RoleUsage())
            finally:
                await ep.provider.aclose()

        t0 = time.monotonic()
        asyncio.run(go())
        assert 0.3 <= time.monotonic() - t0 < 5 and len(srv.requests) == 2


def test_gemini_retry_info_is_read_and_the_sdk_never_retries_on_its_own(monkeypatch):
    import asyncio

    from llm_helpers import endpoint, server_for

    from music_core.llm.executor import RoleUsage

    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    calls = {"n": 0}
    from music_gemini import testing as gt

    def handler(req):
        calls["n"] += 1
        if calls["n"] == 1:
            return Response(429, {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED", "details": [
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.4s"}]}})
        return gt.handle(req)

    with LoopbackServer(handler) as srv, server_for("gemini", faults=FaultPlan(script=["drop", None])) as drops:
        usage = RoleUsage()

        async def go(ep):
            try:
                return await ep.chat([{"role": "user", "content": "hi"}], usage)
            finally:
                await ep.provider.aclose()

        t0 = time.monotonic()
        asyncio.run(go(endpoint("gemini", srv)))
        assert time.monotonic() - t0 >= 0.4 and usage.errors == {"rate_limited": 1}
        usage = RoleUsage()
        asyncio.run(go(endpoint("gemini", drops)))
        assert usage.wire_calls == len(drops.requests) == 2  # every wire call passed our layer


# ---- 8: the method is never silently replaced --------------------------------------------------

def test_fallback_turns_are_recorded_and_never_copy_the_chosen_answer(tmp_path, plugins, monkeypatch):
    """A rewriter that only echoes forces the fallback; every fallback turn says so, the pair
    says so, the report gives the share, and a first turn with nothing to forget is an error."""
    from music_openai.testing import openai_server

    from music_core.config import load_config
    from music_core.context import RunContext
    from music_core.synth.runner import run_synth

    def echo_rewriter(messages, index):
        if "Rewrite that instruction" in messages[0]["content"]:
            return messages[-1]["content"].split("The user's latest instruction:\n")[1].split("\n\nModified")[0]
        return scripted_reply(messages, index)

    monkeypatch.setenv("TEST_KEY", KEY)
    with openai_server(reply=echo_rewriter) as srv:
        cfg = load_config(None, synth_overrides(tmp_path, srv.url + "/v1", "openai", "TEST_KEY")
                          + ["seeds.limit=8", "synth.turns=2", "seeds.min_context_turns=0", "seeds.max_context_turns=2"])
        stats = run_synth(RunContext(cfg, plugins.registry))
    pairs = pairs_of(tmp_path / "synth" / "pairs.jsonl")
    errors = [json.loads(x) for x in open(tmp_path / "synth" / "pairs.errors.jsonl")]
    assert pairs and stats["errors"] == len(errors)
    for p in pairs:
        m = p["meta"]
        assert m["strategy"] == "instruction-contrast" and m["turn_strategies"] == ["forget-history"] * m["num_turns"]
        assert m["made_by_fallback"] == "wholly" and m["fallback_turns"] == m["num_turns"]
        start = m["prefix_messages"]
        assert p["chosen"][start] != p["rejected"][start]  # the fallback never hands back the chosen answer
    # seeds with no earlier turns have nothing to forget at turn 1: an error row, not a copy
    assert any("gave the chosen answer again" in e["error"] for e in errors)
    report = json.loads((tmp_path / "synth" / "pairs.report.json").read_text())
    assert report["fallback_turn_share"] == 1.0 and report["pairs_made_by_fallback"] == {"wholly": len(pairs)}
    assert "made by the fallback strategy" in (tmp_path / "synth" / "pairs.report.md").read_text()


# ---- 9: the paper's prompts are the default; small-model simplifications are a named profile --

def test_paper_profile_prompts_see_the_whole_history(tmp_path, plugins, monkeypatch):
    from music_openai.testing import openai_server

    from music_core.config import load_config
    from music_core.context import RunContext
    from music_core.synth.runner import run_synth

    seeds = tmp_path / "seeds.jsonl"
    long_answer = "Lisbon has many sights. " * 40  # ~960 characters: the small-model profile cuts it
    seeds.write_text(json.dumps({"id": "s1", "messages": [
        {"role": "user", "content": "Plan three days in Lisbon for me."},
        {"role": "assistant", "content": long_answer},
        {"role": "user", "content": "Keep everything vegetarian please."},
        {"role": "assistant", "content": "Noted: vegetarian only."},
        {"role": "user", "content": "Add a day trip to Sintra."}]}) + "\n")
    monkeypatch.setenv("TEST_KEY", KEY)
    with openai_server(reply=scripted_reply) as srv:
        cfg = load_config(None, synth_overrides(tmp_path / "out", srv.url + "/v1", "openai", "TEST_KEY")
                          + ["seeds.source=jsonl", f"seeds.path={seeds}", "seeds.min_context_turns=2",
                             "synth.turns=2", "synth.filter=null"])
        run_synth(RunContext(cfg, plugins.registry))
        bodies = [json.loads(r.body) for r in srv.requests]
    pair = pairs_of(tmp_path / "out" / "synth" / "pairs.jsonl")[0]
    assert pair["meta"]["prompt_profile"] == "paper" and "openai" in pair["meta"]["prompt_profile_reason"]
    rewrites = [b for b in bodies if "Rewrite that instruction" in b["messages"][0]["content"]]
    assert rewrites and all(long_answer.strip() in b["messages"][-1]["content"] for b in rewrites)
    users = [b for b in bodies if "simulating the human user" in b["messages"][0]["content"]]
    assert users and all(long_answer.strip() in b["messages"][-1]["content"] for b in users)
    assert all("max_tokens" not in b or b["max_tokens"] == 64 for b in users)  # the endpoint's own budget
    # the rejected answer: the assistant sees the modified instruction and no word of the original
    modified = pair["meta"]["turns"][0]["modified"]
    answering = [b for b in bodies if b["messages"][-1]["content"] == modified]
    assert answering and all("Do not answer" not in m["content"] for b in answering for m in b["messages"])


def test_auto_profile_is_small_model_only_for_local_endpoints():
    from music_core.config import load_config, resolve_prompt_profile, resolve_user_simulator

    local = load_config(None)
    assert resolve_prompt_profile(local)[0] == "small-model" and resolve_user_simulator(local) == "role-flip"
    hosted = load_config(None, ["models.api.provider=openai", "models.api.model=m", "roles.contrast=api"])
    assert resolve_prompt_profile(hosted)[0] == "paper" and resolve_user_simulator(hosted) == "transcript"
    forced = load_config(None, ["synth.prompt_profile=paper"])
    assert resolve_prompt_profile(forced) == ("paper", "set by synth.prompt_profile")


def test_docs_table_lists_every_profile_difference():
    from conftest import REPO

    text = (REPO / "docs" / "prompt-profiles.md").read_text()
    for item in ("rewriter", "user simulator", "guidance", "300", "2 sentences", "48", "64", "few-shot", "role-flip"):
        assert item in text, item


# ---- 10: user-turn validation catches copies and the assistant's voice -----------------------

def test_user_turn_validation_catches_copies_and_assistant_voice():
    from music_simulators.validation import check_user_turn

    answer = ("You can roast the vegetables at 200 C for 25 minutes. If you have questions about gaming, "
              "there's a dedicated chatbot for that. Season with salt, pepper and a little lemon.")
    history = [{"role": "user", "content": "How do I roast vegetables?"}, {"role": "assistant", "content": answer}]
    kw = dict(end_token="[END]", min_chars=8, max_chars=None, max_sentences=None, max_copied_share=0.5)
    copy = "Season with salt, pepper and a little lemon. Thanks!"
    assert check_user_turn(copy, history, **kw) == ("bad", "copies an earlier message")
    voice = "If you have questions about gaming, there's a dedicated chatbot for that."
    assert check_user_turn(voice, history, **kw) == ("bad", "assistant voice")
    assert check_user_turn("Can I do it in an air fryer instead?", history, **kw)[0] == "ok"
    assert check_user_turn("[END]", history, **kw)[0] == "end"


def test_report_gives_the_user_turn_rejection_rate_by_reason(tmp_path, plugins, monkeypatch):
    from music_openai.testing import openai_server

    from music_core.config import load_config
    from music_core.context import RunContext
    from music_core.synth.runner import run_synth

    def parrot_then_ask(messages, index):
        if "simulating the human user" in messages[0]["content"] and index == 0:
            return "How can I help you with anything else today?"  # the assistant's voice: refused
        return scripted_reply(messages, index)

    monkeypatch.setenv("TEST_KEY", KEY)
    with openai_server(reply=parrot_then_ask, seeded=True) as srv:
        cfg = load_config(None, synth_overrides(tmp_path, srv.url + "/v1", "openai", "TEST_KEY")
                          + ["seeds.limit=4", "synth.turns=2"])
        run_synth(RunContext(cfg, plugins.registry))
    report = json.loads((tmp_path / "synth" / "pairs.report.json").read_text())
    sim = report["user_simulator"]
    assert sim["rejections_by_reason"].get("assistant voice", 0) >= 4 and 0 < sim["rejection_rate"] < 1


# ---- 11: bad input --------------------------------------------------------------------------

def test_non_utf8_seed_file_names_file_and_line(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    good = json.dumps({"id": "a", "messages": [{"role": "user", "content": "hi"}]})
    seeds.write_bytes(good.encode() + b"\n" + b'{"id": "b", "messages": [{"role": "user", "content": "caf\xe9"}]}\n')
    proc = run([sys.executable, "-m", "music_core", "synth", "seeds.source=jsonl", f"seeds.path={seeds}",
                f"run.output_dir={tmp_path / 'out'}", "run.progress=false"])
    assert proc.returncode == 3 and f"{seeds}:2: not UTF-8 (byte 0xe9" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out" / "synth" / "pairs.jsonl").exists()


def test_empty_seed_file_is_an_error(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("")
    proc = run([sys.executable, "-m", "music_core", "synth", "seeds.source=jsonl", f"seeds.path={seeds}",
                f"run.output_dir={tmp_path / 'out'}", "run.progress=false"])
    assert proc.returncode != 0 and f"{seeds}: holds no records" in proc.stderr, proc.stderr
    assert not (tmp_path / "out" / "synth" / "pairs.jsonl").exists()


def test_mix_refuses_what_it_cannot_meet_and_holds_the_ratio_in_train(tmp_path, plugins):
    from test_mix import ctx_for, fake_synthetic, write

    from music_core.errors import ConfigError
    from music_core.mix import run_mix

    pairs = plugins.registry.create("seed_source", "builtin").load_pairs(ctx_for(tmp_path, plugins).config.mix.original)
    syn = tmp_path / "synth" / "pairs.jsonl"
    syn.parent.mkdir()
    write(syn, fake_synthetic(pairs, 40))
    with pytest.raises(ConfigError, match="mix.synthetic_count': asks for 500 pairs but only 40"):
        run_mix(ctx_for(tmp_path, plugins, "mix.synthetic_count=500"))
    with pytest.raises(ConfigError, match="mix.synthetic_ratio"):
        run_mix(ctx_for(tmp_path, plugins, "mix.synthetic_ratio=0.5", "mix.original_count=10"))
    s = run_mix(ctx_for(tmp_path, plugins, "mix.synthetic_ratio=0.25", "mix.eval_fraction=0.3"))
    assert abs(s["synthetic_share_of_train"] - 0.25) < 0.02


# ---- 12: progress reaches a log file ----------------------------------------------------------

def test_progress_lines_when_output_is_not_a_terminal(tmp_path):
    from music_openai.testing import openai_server

    with openai_server(reply=scripted_reply, latency_s=0.05) as srv:
        cmd = synth_cmd(tmp_path, srv.url + "/v1", "run.progress=true", "run.progress_interval_s=0.2")
        proc = run(cmd)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("[synth] ")]
    assert len(lines) >= 2, proc.stderr
    assert all(w in lines[-1] for w in ("/8 pairs", "pairs/min", "calls", "tok", "$"))


# ---- 5: the offline engine is reproducible -------------------------------------------------

@pytest.mark.slow
def test_local_sample_depends_on_request_index_and_seed_not_on_its_batch(plugins):
    import asyncio

    from music_local.provider import LocalProvider

    from music_core.config.schema import EndpointConfig
    from music_core.llm.types import ProviderCall, SamplingParams

    prov = LocalProvider(EndpointConfig(provider="local", model="smollm2-135m", options={"max_batch_size": 8}))

    def call(text, seed):
        p = SamplingParams(temperature=0.8, max_tokens=24, top_p=0.95, seed=seed)
        return ProviderCall(({"role": "user", "content": text},), p, (seed,))

    others = [call(t, 0) for t in ("Tell me about dogs.", "Tell me about owls!", "Hi there, how are you?",
                                   "Write a long story about a dragon and a knight who become friends.")]

    async def go():
        alone = (await prov.generate(call("Tell me about cats.", 1)))[0].text
        crowded = await asyncio.gather(*(prov.generate(o) for o in others[:2]), prov.generate(call("Tell me about cats.", 1)),
                                       *(prov.generate(o) for o in others[2:]))
        other_seed = (await prov.generate(call("Tell me about cats.", 2)))[0].text
        return alone, crowded[2][0].text, other_seed

    alone, crowded, other_seed = asyncio.run(go())
    assert alone == crowded and alone != other_seed


@pytest.mark.slow
def test_local_rows_decode_bitwise_alike_alone_and_merged_with_other_buckets(plugins):
    """The engine decodes rows of different prompt buckets and sampling settings in one running
    batch, their caches left-padded to the widest: a row's log-probabilities at every step are
    the same floats alone (fillers completing its batch), beside longer and shorter prompts, and
    joining a batch that is halfway through another answer."""
    import asyncio

    from music_local.provider import LocalProvider

    from music_core.config.schema import EndpointConfig
    from music_core.llm.types import ProviderCall, SamplingParams

    prov = LocalProvider(EndpointConfig(provider="local", model="smollm2-135m"))
    params = SamplingParams(temperature=0.0, max_tokens=12, top_logprobs=3)

    def call(text):
        return ProviderCall(({"role": "user", "content": text},), params, (0,))

    me = call("Name three birds.")
    others = [call("Hi!"), call("Explain, step by step and in detail, how a bill becomes law " * 12),
              call("Write a haiku about autumn leaves falling on a quiet river at dusk.")]

    async def go():
        alone = (await prov.generate(me))[0]
        crowded = await asyncio.gather(prov.generate(others[0]), prov.generate(me),
                                       *(prov.generate(o) for o in others[1:]))
        return alone, crowded[1][0]

    async def joining():  # a long answer is being decoded when this request arrives
        counting = ProviderCall(({"role": "user", "content": "Count from 1 to 100, separated by commas."},),
                                SamplingParams(temperature=0.8, max_tokens=80, seed=3), (0,))
        running = asyncio.ensure_future(prov.generate(counting))
        await asyncio.sleep(2.0)
        assert not running.done()
        mine = (await prov.generate(me))[0]
        await running
        return mine

    alone, crowded = asyncio.run(go())
    engine = prov.engine()
    assert engine.batches >= 2 and engine.rows >= 5
    assert alone.text == crowded.text and alone.top_logprobs == crowded.top_logprobs
    joined = asyncio.run(joining())
    assert alone.text == joined.text and alone.top_logprobs == joined.top_logprobs


def test_local_dtype_auto_is_bfloat16_only_where_native_and_the_cache_names_what_ran(monkeypatch):
    """bfloat16 on a CPU without AVX512-BF16/AMX is emulated (8x slower matrix products on AVX2):
    auto takes float32 there, and the cache key names the dtype computed, so answers made in
    bfloat16 on one machine are not served as float32 answers on another."""
    import torch
    from music_local import engine
    from music_local.provider import LocalProvider

    from music_core.config.schema import EndpointConfig

    identities = {}
    for native in (True, False):
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda native=native: native)
        want = "bfloat16" if native else "float32"
        assert engine.resolve_dtype("auto", "cpu") == want
        assert engine.resolve_dtype("float16", "cpu") == "float16"  # asked for by name: as asked
        prov = LocalProvider(EndpointConfig(provider="local", model="smollm2-135m", options={"device": "cpu"}))
        identities[native] = prov.cache_identity()["options"]
        assert identities[native]["dtype"] == want
    assert identities[True] != identities[False]


@pytest.mark.slow
def test_offline_runs_write_identical_pairs_and_a_killed_run_resumes_to_them(tmp_path):
    """Two uninterrupted offline runs write byte-identical files; a run killed after its first
    pair and resumed writes the same bytes."""
    def cmd(out):
        return [sys.executable, "-m", "music_core", "synth", f"run.output_dir={out}", "run.progress=false",
                "seeds.limit=4", "synth.turns=2"]

    assert run(cmd(tmp_path / "a"), timeout=900).returncode == 0
    assert run(cmd(tmp_path / "b"), timeout=900).returncode == 0
    a = (tmp_path / "a" / "synth" / "pairs.jsonl").read_bytes()
    assert a and a == (tmp_path / "b" / "synth" / "pairs.jsonl").read_bytes()

    out = tmp_path / "c" / "synth" / "pairs.jsonl"
    proc = subprocess.Popen(cmd(tmp_path / "c"), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and len(pairs_of(out)) < 1 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert run(cmd(tmp_path / "c"), timeout=900).returncode == 0
    assert out.read_bytes() == a
