"""Batch mode and replica routing, through the real SDK clients against loopback servers that
speak each vendor's batch API: the same pairs as online, re-attachment after SIGKILL with
nothing paid twice, expired/cancelled/failed items resubmitted alone, replicas that fail cooled
down and retried, and the batch plan in ``--dry-run``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from llm_helpers import KEY
from synth_helpers import scripted_reply, synth_overrides

from music_core.config import load_config
from music_core.context import RunContext
from music_core.errors import ConfigError

SERVERS = {
    "openai": ("music_openai.testing", "openai_server", "/v1"),
    "anthropic": ("music_anthropic.testing", "anthropic_server", ""),
    "gemini": ("music_gemini.testing", "gemini_server", ""),
}
FAST_BATCH = ["models.sim.mode=batch", "models.sim.batch_linger_s=0.1", "models.sim.batch_poll_s=0.05",
              "models.sim.batch_poll_max_s=0.2"]


def server(provider: str, **kw):
    import importlib

    mod, fn, _ = SERVERS[provider]
    if provider != "anthropic":
        kw.setdefault("seeded", True)  # the same request and seed give the same answer, in any order
    return getattr(importlib.import_module(mod), fn)(reply=scripted_reply, **kw)


def run_synth(overrides, plugins):
    from music_core.synth.runner import run_synth as stage

    ctx = RunContext(load_config(None, overrides), plugins.registry)
    return ctx, stage(ctx)


def pairs_of(path):
    return [(p["id"], p["chosen"], p["rejected"]) for p in map(json.loads, open(path))]


def synth_args(tmp_path, srv, provider, extra=()):
    return synth_overrides(tmp_path, srv.url + SERVERS[provider][2], provider, "TEST_KEY") + [
        "seeds.limit=6", "synth.turns=2", *extra]


@pytest.mark.parametrize("provider", sorted(SERVERS))
def test_batch_mode_makes_the_same_pairs_as_online(provider, tmp_path, monkeypatch, plugins):
    monkeypatch.setenv("TEST_KEY", KEY)
    with server(provider) as srv:
        online_ctx, online = run_synth(synth_args(tmp_path / "online", srv, provider), plugins)
        online_wire = len(srv.requests)
    with server(provider) as srv:
        batch_ctx, stats = run_synth(synth_args(tmp_path / "batch", srv, provider, FAST_BATCH), plugins)
        jobs = srv.batch_jobs
        chat_routes = [r for r in srv.requests if r.path.endswith(("/chat/completions", "/v1/messages", ":generateContent"))]
    assert online["written"] == stats["written"] == 6
    assert pairs_of(batch_ctx.synth_output()) == pairs_of(online_ctx.synth_output())  # ids and contents equal
    assert chat_routes == []  # every call went through batch jobs
    b = stats["endpoints"]["sim"]["batch"]
    # a wavefront: T=2 with a rewrite makes 5 rounds (answer+rewrite, rejected answer, user turn, ...),
    # each one job, however many conversations there are
    assert b["rounds"] == 5 and b["jobs_submitted"] == len(jobs.jobs) == 5, b
    assert b["items_submitted"] == sum(len(j.items) for j in jobs.jobs.values()) == online_wire
    assert jobs.resubmitted() == {}
    usage = stats["usage"]["assistant_simulator"]
    assert usage["batched"] == usage["wire_calls"] > 0
    report = (batch_ctx.synth_output().with_name("pairs.report.md")).read_text()
    assert "ran in batch mode" in report and "5 rounds" in report


def test_batch_cost_is_booked_at_the_batch_price(tmp_path, monkeypatch, plugins):
    monkeypatch.setenv("TEST_KEY", KEY)
    price = ["models.sim.price_input_per_mtok=1000", "models.sim.price_output_per_mtok=1000"]
    with server("openai") as srv:
        _, online = run_synth(synth_args(tmp_path / "online", srv, "openai", price), plugins)
    with server("openai") as srv:
        _, batch = run_synth(synth_args(tmp_path / "batch", srv, "openai", FAST_BATCH + price), plugins)
    for role in ("user_simulator", "assistant_simulator", "contrast"):
        assert batch["usage"][role]["cost_usd"] == pytest.approx(online["usage"][role]["cost_usd"] * 0.5)


@pytest.mark.parametrize("provider", sorted(SERVERS))
def test_expired_and_failed_items_are_resubmitted_and_nothing_else(provider, tmp_path, monkeypatch, plugins):
    monkeypatch.setenv("TEST_KEY", KEY)
    with server(provider) as srv:
        ref_ctx, _ = run_synth(synth_args(tmp_path / "ref", srv, provider), plugins)
    with server(provider, batch={"expire_jobs": (1,), "expire_answered": 0.5, "item_fault_rate": 0.2}) as srv:
        ctx, stats = run_synth(synth_args(tmp_path / "run", srv, provider, FAST_BATCH), plugins)
        jobs = srv.batch_jobs
    assert pairs_of(ctx.synth_output()) == pairs_of(ref_ctx.synth_output())
    b = stats["endpoints"]["sim"]["batch"]
    assert "expired" in b["job_states"] and jobs.faulted, b
    assert b["items_resubmitted"] == sum(jobs.unanswered.values()) > 0
    assert jobs.resubmitted() == {}  # only what a job failed or never ran went out again


def _synth_cmd(tmp_path, base_url, provider, extra=()):
    return [sys.executable, "-m", "music_core", "synth",
            *synth_overrides(tmp_path, base_url, provider, "TEST_KEY"), "seeds.limit=8", "synth.turns=2",
            "models.sim.mode=batch", "models.sim.batch_linger_s=0.1", "models.sim.batch_poll_s=0.05",
            "models.sim.batch_poll_max_s=0.1", *extra]


@pytest.mark.parametrize("provider", sorted(SERVERS))
def test_sigkill_with_batches_in_flight_reattaches_and_pays_nothing_twice(provider, tmp_path, monkeypatch):
    env = {**os.environ, "TEST_KEY": KEY}
    suffix = SERVERS[provider][2]
    with server(provider, batch={"complete_after_s": 0.1}) as ref:
        subprocess.run(_synth_cmd(tmp_path / "ref", ref.url + suffix, provider), check=True, env=env, capture_output=True)
    reference = pairs_of(tmp_path / "ref" / "synth" / "pairs.jsonl")
    assert len(reference) == 8

    # Jobs take 1.5 s: the kill lands once one has ended and a later one is still running.
    with server(provider, batch={"complete_after_s": 1.5}) as srv:
        jobs = srv.batch_jobs
        proc = subprocess.Popen(_synth_cmd(tmp_path / "run", srv.url + suffix, provider), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 90
        while time.time() < deadline:
            states = [j.state for j in list(jobs.jobs.values())]
            if "completed" in states and states[-1] == "running":
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        in_flight = [j.id for j in jobs.jobs.values() if j.state == "running"]
        finished = [j.id for j in jobs.jobs.values() if j.state == "completed"]
        assert in_flight and finished, "the kill must land with jobs finished and in flight"
        before = len(jobs.jobs)
        out = subprocess.run(_synth_cmd(tmp_path / "run", srv.url + suffix, provider), env=env,
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-2000:]
        assert jobs.resubmitted() == {}  # no item went out twice
        assert len(jobs.jobs) > before
    assert pairs_of(tmp_path / "run" / "synth" / "pairs.jsonl") == reference
    report = json.loads((tmp_path / "run" / "synth" / "pairs.report.json").read_text())
    assert report["endpoints_this_run"]["sim"]["batch"]["jobs_reattached"] >= len(in_flight)
    # "re-attached to batch job X", or, where the kill fell between the vendor making the job and
    # the journal recording its id, "found batch job X of a submission interrupted ...; re-attached"
    assert "re-attached" in out.stderr


def test_a_job_cancelled_at_the_vendor_is_collected_and_its_unrun_items_resubmitted(tmp_path, monkeypatch, plugins):
    """A job cancelled outside the run (the vendor's console, another tool): what it answered is
    kept, the rest goes out again."""
    import threading

    import openai

    monkeypatch.setenv("TEST_KEY", KEY)
    with server("openai") as srv:
        ref_ctx, _ = run_synth(synth_args(tmp_path / "ref", srv, "openai"), plugins)
    with server("openai", batch={"complete_after_s": 0.5}) as srv:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key=KEY, max_retries=0)
        stop = threading.Event()

        def cancel_second_job() -> None:
            while not stop.is_set():
                if len(srv.batch_jobs.jobs) >= 2:
                    client.batches.cancel(sorted(srv.batch_jobs.jobs)[1])
                    return
                time.sleep(0.01)

        t = threading.Thread(target=cancel_second_job)
        t.start()
        try:
            ctx, stats = run_synth(synth_args(tmp_path / "run", srv, "openai", FAST_BATCH), plugins)
        finally:
            stop.set()
            t.join()
        jobs = srv.batch_jobs
    assert pairs_of(ctx.synth_output()) == pairs_of(ref_ctx.synth_output())
    assert stats["endpoints"]["sim"]["batch"]["job_states"].get("cancelled") == 1
    assert jobs.resubmitted() == {} and sum(jobs.unanswered.values()) > 0


def test_a_refused_model_in_batch_mode_stops_the_run_naming_the_endpoint(tmp_path, monkeypatch, plugins):
    from music_core.llm.errors import EndpointFatalError

    monkeypatch.setenv("TEST_KEY", KEY)
    with server("openai") as srv:
        with pytest.raises(EndpointFatalError, match="models.sim"):
            run_synth(synth_args(tmp_path, srv, "openai", FAST_BATCH) + ["models.sim.model=missing-model"], plugins)


def test_batch_mode_is_refused_for_a_provider_without_a_batch_api(tmp_path, plugins):
    ctx = RunContext(load_config(None, [f"run.output_dir={tmp_path}", "models.local.mode=batch"]), plugins.registry)
    with pytest.raises(ConfigError, match=r"models\.local\.mode.*no batch API"):
        ctx.llm.endpoint("local")


@pytest.mark.parametrize("override, key", [(["models.local.mode=bulk"], "models.local.mode"),
                                           (["models.local.base_url=http://a", "models.local.base_urls=[http://b]"],
                                            "models.local.base_urls"),
                                           (["models.local.batch_price_factor=0"], "models.local.batch_price_factor")])
def test_bad_batch_and_replica_settings_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, override)


def test_paper_dry_run_prints_the_batch_plan():
    out = subprocess.run([sys.executable, "-m", "music_core", "run", "--config", "configs/paper.yaml", "--dry-run"],
                         capture_output=True, text=True, check=True).stdout
    assert "synthesis in batch mode (gemini_sim)" in out and "in 14 rounds (T=5;" in out
    sim = next(line for line in out.splitlines() if line.strip().startswith("assistant_simulator"))
    assert " batch " in sim
    online_usd, batch_usd = (float(x) for x in sim.split()[-2:])
    assert batch_usd == pytest.approx(online_usd / 2, abs=0.01)
    assert "as configured (every role online:" in out


# Replica routing


def test_requests_avoid_a_failing_replica_and_retry_it_after_its_cooldown(tmp_path, monkeypatch, plugins):
    from music_openai.testing import openai_server

    from music_core.testing import FaultPlan

    monkeypatch.setenv("TEST_KEY", KEY)
    # answers take 30 ms, so that the run outlasts a few cooldowns
    with (openai_server(reply=scripted_reply, seeded=True) as ref,
          openai_server(reply=scripted_reply, seeded=True, latency_s=0.03) as a,
          openai_server(reply=scripted_reply, seeded=True, latency_s=0.03) as b,
          openai_server(reply=scripted_reply, faults=FaultPlan(rate=1.0, kinds=("500",))) as bad):
        ref_ctx, _ = run_synth(synth_args(tmp_path / "ref", ref, "openai") + ["seeds.limit=12"], plugins)
        urls = [a.url + "/v1", bad.url + "/v1", b.url + "/v1"]
        ctx, stats = run_synth(synth_overrides(tmp_path / "run", urls[0], "openai", "TEST_KEY")
                               + ["models.sim.base_url=null", f"models.sim.base_urls=[{','.join(urls)}]",
                                  "models.sim.replica_cooldown_s=0.2", "models.sim.max_retries=3",
                                  "seeds.limit=12", "synth.turns=2"], plugins)
    assert stats["written"] == 12 and stats["missing"] == 0
    assert pairs_of(ctx.synth_output()) == pairs_of(ref_ctx.synth_output())
    served = {r["url"]: r for r in stats["endpoints"]["sim"]["replicas"]}
    assert served[urls[1]]["served"] == 0 and served[urls[1]]["failures"] == len(bad.requests) >= 2
    assert served[urls[0]]["served"] > 0 and served[urls[2]]["served"] > 0
    assert served[urls[0]]["served"] + served[urls[2]]["served"] == len(a.requests) + len(b.requests)
    # retried after its cooldown: its requests come in bursts at least the cooldown apart
    times = bad.started_at
    bursts = [t for i, t in enumerate(times) if i == 0 or t - times[i - 1] > 0.1]
    assert len(bursts) >= 2 and all(y - x >= 0.19 for x, y in zip(bursts, bursts[1:]))


def test_a_dead_replica_is_not_fatal_but_all_dead_is(tmp_path, monkeypatch, plugins):
    import socket

    from music_openai.testing import openai_server

    from music_core.llm.errors import EndpointFatalError

    def dead_url() -> str:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nothing listens there now: connections are refused
        return f"http://127.0.0.1:{port}/v1"

    monkeypatch.setenv("TEST_KEY", KEY)
    common = ["models.sim.base_url=null", "models.sim.replica_cooldown_s=5", "seeds.limit=3", "synth.turns=1"]
    with openai_server(reply=scripted_reply, seeded=True) as live:
        _, stats = run_synth(synth_overrides(tmp_path / "one", live.url, "openai", "TEST_KEY") + common
                             + [f"models.sim.base_urls=[{dead_url()},{live.url}/v1]"], plugins)
    assert stats["written"] + stats["filtered"] == 3 and stats["missing"] == 0
    with pytest.raises(EndpointFatalError, match="models.sim"):
        run_synth(synth_overrides(tmp_path / "all", "x", "openai", "TEST_KEY") + common
                  + [f"models.sim.base_urls=[{dead_url()},{dead_url()}]"], plugins)


def test_a_vendor_outage_while_polling_leaves_pairs_missing_and_the_rerun_reattaches(tmp_path, monkeypatch, plugins):
    import threading

    from music_core.synth.runner import SynthIncomplete
    from music_core.testing import FaultPlan

    monkeypatch.setenv("TEST_KEY", KEY)
    with server("openai") as srv:
        ref_ctx, _ = run_synth(synth_args(tmp_path / "ref", srv, "openai"), plugins)
    with server("openai", batch={"complete_after_s": 0.3}) as srv:
        def outage_once_a_job_exists() -> None:  # the vendor answers the submission, then goes down
            deadline = time.time() + 30
            while not srv.batch_jobs.jobs and time.time() < deadline:
                time.sleep(0.005)
            srv.faults = FaultPlan(rate=1.0, kinds=("500",))

        t = threading.Thread(target=outage_once_a_job_exists)
        t.start()
        args = synth_args(tmp_path / "run", srv, "openai", FAST_BATCH + ["models.sim.max_retries=2"])
        with pytest.raises(SynthIncomplete, match="missing"):
            run_synth(args, plugins)
        t.join()
        assert len(srv.batch_jobs.jobs) == 1  # nothing was resubmitted while the vendor was down
        srv.faults = FaultPlan()
        ctx, stats = run_synth(args, plugins)
        jobs = srv.batch_jobs
    assert pairs_of(ctx.synth_output()) == pairs_of(ref_ctx.synth_output())
    assert stats["endpoints"]["sim"]["batch"]["jobs_reattached"] == 1 and jobs.resubmitted() == {}


def test_a_round_is_split_at_the_request_limit(tmp_path, monkeypatch, plugins):
    monkeypatch.setenv("TEST_KEY", KEY)
    with server("openai") as srv:
        ref_ctx, _ = run_synth(synth_args(tmp_path / "ref", srv, "openai"), plugins)
    with server("openai") as srv:
        ctx, stats = run_synth(synth_args(tmp_path / "run", srv, "openai", FAST_BATCH + ["models.sim.batch_max_requests=4"]),
                               plugins)
        sizes = [len(j.items) for j in srv.batch_jobs.jobs.values()]
    assert pairs_of(ctx.synth_output()) == pairs_of(ref_ctx.synth_output())
    b = stats["endpoints"]["sim"]["batch"]
    assert max(sizes) == 4 and b["jobs_submitted"] == len(sizes) > b["rounds"]


def test_batch_mode_through_faults_on_every_batch_route_ends_equal_and_pays_nothing_twice(tmp_path, monkeypatch, plugins):
    """429s, 500s, dropped connections and malformed bodies on uploads, job creation, polls and
    result downloads: retried, and a rerun finishes what the retries did not."""
    from music_core.synth.runner import SynthIncomplete
    from music_core.testing import FaultPlan

    monkeypatch.setenv("TEST_KEY", KEY)
    with server("openai") as srv:
        ref_ctx, _ = run_synth(synth_args(tmp_path / "ref", srv, "openai"), plugins)
    faults = FaultPlan(rate=0.3, kinds=("429", "500", "drop", "malformed"), seed=3, retry_after_s=0.01)
    with server("openai", faults=faults) as srv:
        args = synth_args(tmp_path / "run", srv, "openai", FAST_BATCH + ["models.sim.max_retries=6"])
        for _ in range(4):
            try:
                ctx, _ = run_synth(args, plugins)
                break
            except SynthIncomplete:
                continue
        jobs = srv.batch_jobs
        assert sum(srv.outcomes[k] for k in ("429", "500", "drop", "malformed")) > 5
    assert pairs_of(ctx.synth_output()) == pairs_of(ref_ctx.synth_output())
    assert jobs.resubmitted() == {}


def test_a_server_without_a_batch_api_stops_the_run_saying_so(tmp_path, monkeypatch, plugins):
    import functools

    from music_openai.testing import handle

    from music_core.llm.errors import EndpointFatalError
    from music_core.testing import LoopbackServer

    monkeypatch.setenv("TEST_KEY", KEY)
    with LoopbackServer(functools.partial(handle, reply=scripted_reply, seen={})) as srv:  # chat completions only
        with pytest.raises(EndpointFatalError, match="has no Batch API") as err:
            run_synth(synth_args(tmp_path, srv, "openai", FAST_BATCH), plugins)
    assert "models.sim" in str(err.value)


def test_one_refused_prompt_in_the_first_job_is_that_pair_s_error_not_the_endpoint_s(tmp_path, monkeypatch, plugins):
    monkeypatch.setenv("TEST_KEY", KEY)
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"id": f"s{i}", "messages": [{"role": "user", "content": text}]}) + "\n"
                             for i, text in enumerate(["Plan a trip to Oslo.", "Explain [[bad-request]] please.",
                                                       "Teach me chess openings.", "Fix my bike's brakes."])))
    with server("openai") as srv:
        ctx, stats = run_synth(synth_args(tmp_path / "run", srv, "openai", FAST_BATCH)
                               + ["seeds.source=jsonl", f"seeds.path={seeds}"], plugins)
    assert stats["written"] == 3 and stats["errors"] == 1
    errors = [json.loads(line) for line in open(ctx.synth_output().with_name("pairs.errors.jsonl"))]
    assert "BadRequestError" in errors[0]["error"] or "prompt refused" in errors[0]["error"]


@pytest.mark.parametrize("provider", sorted(SERVERS))
def test_a_job_made_while_the_client_gave_up_is_found_not_paid_twice(provider, tmp_path, monkeypatch, plugins):
    """The vendor makes the first job but answers only after the client's timeout: what a kill
    between the vendor making a job and the journal recording its id looks like. The retry
    finds the job (by its label; Anthropic's by time and size) instead of sending it again."""
    monkeypatch.setenv("TEST_KEY", KEY)
    with server(provider) as srv:
        ref_ctx, _ = run_synth(synth_args(tmp_path / "ref", srv, provider), plugins)
    with server(provider, batch={"hang_after_create": (0,), "hang_s": 2.0}) as srv:
        ctx, stats = run_synth(synth_args(tmp_path / "run", srv, provider, FAST_BATCH + ["models.sim.timeout_s=0.5"]),
                               plugins)
        jobs = srv.batch_jobs
    assert pairs_of(ctx.synth_output()) == pairs_of(ref_ctx.synth_output())
    assert jobs.resubmitted() == {} and stats["endpoints"]["sim"]["batch"]["jobs_reattached"] == 1


def test_batches_list_and_cancel_the_jobs_of_a_killed_run_and_the_rerun_finishes(tmp_path):
    env = {**os.environ, "TEST_KEY": KEY}
    with server("openai", batch={"complete_after_s": 60}) as srv:
        cmd = _synth_cmd(tmp_path / "run", srv.url + "/v1", "openai")
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while not srv.batch_jobs.jobs and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # the journal has the id once the creation is answered
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        config = cmd[cmd.index("synth") + 1:]

        def batches(verb):
            return subprocess.run([sys.executable, "-m", "music_core", "batches", verb, *config], env=env,
                                  capture_output=True, text=True)

        listed = batches("list")
        assert listed.returncode == 0 and "batch_0000" in listed.stdout and "submitted" in listed.stdout, listed.stderr
        cancelled = batches("cancel")
        assert cancelled.returncode == 0 and "batch_0000: cancel requested (sim)" in cancelled.stdout, cancelled.stderr
        assert srv.batch_jobs.jobs["batch_0000"].state == "cancelled"
        srv.batch_jobs.complete_after_s = 0.1
        rerun = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        assert srv.batch_jobs.resubmitted() == {}  # only what the cancelled job never ran went out again
    assert len(pairs_of(tmp_path / "run" / "synth" / "pairs.jsonl")) == 8
    assert "cancelled" in batches("list").stdout
