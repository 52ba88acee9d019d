"""MUSIC synthesis end to end: rollouts through real SDK clients against loopback servers,
provenance, resumability after SIGKILL, bad seed files, third-party strategies."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from llm_helpers import KEY
from synth_helpers import scripted_reply, synth_overrides

from music_core.config import load_config
from music_core.context import RunContext
from music_core.errors import RecordError

SERVERS = {
    "openai": ("music_openai.testing", "openai_server", "/v1"),
    "anthropic": ("music_anthropic.testing", "anthropic_server", ""),
    "gemini": ("music_gemini.testing", "gemini_server", ""),
}


def server(provider: str, **kw):
    import importlib

    mod, fn, _ = SERVERS[provider]
    return getattr(importlib.import_module(mod), fn)(reply=scripted_reply, **kw)


def run_synth(overrides, plugins):
    from music_core.synth.runner import run_synth as stage

    ctx = RunContext(load_config(None, overrides), plugins.registry)
    return ctx, stage(ctx)


def read_pairs(path):
    return [json.loads(line) for line in open(path)]


def test_answers_cut_by_max_tokens_are_counted_per_pair_and_reported(tmp_path, monkeypatch, plugins):
    """An answer the token cap ended is kept (it is the simulator's answer) but recorded: in the
    pair's provenance by role, and in bold in the synthesis report."""
    from music_openai.testing import openai_server

    def reply(messages, index):
        text = scripted_reply(messages, index)
        return text + " [[length]]" if text.startswith("Answer ") and index % 2 == 0 else text

    monkeypatch.setenv("TEST_KEY", KEY)
    with openai_server(reply=reply) as srv:
        ctx, stats = run_synth(synth_overrides(tmp_path, srv.url + "/v1", "openai", "TEST_KEY")
                               + ["seeds.limit=4", "synth.turns=2"], plugins)
    pairs = read_pairs(ctx.synth_output())
    cut = [p["meta"]["usage"]["cut_at_max_tokens"] for p in pairs]
    assert all(set(c) <= {"assistant_simulator"} for c in cut) and sum(c.get("assistant_simulator", 0) for c in cut) > 0
    report = json.loads((tmp_path / "synth" / "pairs.report.json").read_text())
    assert report["cut_at_max_tokens"]["assistant_simulator"] == sum(c.get("assistant_simulator", 0) for c in cut)
    assert "samples cut short by max_tokens" in (tmp_path / "synth" / "pairs.report.md").read_text()


@pytest.mark.parametrize("provider", sorted(SERVERS))
def test_synth_against_each_provider_by_changing_one_line(provider, tmp_path, monkeypatch, plugins):
    monkeypatch.setenv("TEST_KEY", KEY)
    with server(provider) as srv:
        base = srv.url + SERVERS[provider][2]
        ctx, stats = run_synth(synth_overrides(tmp_path, base, provider, "TEST_KEY") + ["seeds.limit=5", "synth.turns=3"], plugins)
    assert stats["written"] == 5 and stats["errors"] == 0
    pairs = read_pairs(ctx.synth_output())
    for p in pairs:
        meta = p["meta"]
        assert meta["strategy"] == "instruction-contrast" and meta["endpoints"]["assistant_simulator"] == f"{provider}:fake-model"
        assert meta["num_turns"] == 3 and len(meta["turns"]) == 3
        shared = meta["prefix_messages"]
        assert p["chosen"][:shared] == p["rejected"][:shared]
        for t in meta["turns"]:
            assert t["modified"].endswith("but only for experts.") and t["original"] in t["modified"][:-25] + t["original"]
        # the rejected branch stores the ORIGINAL instruction, never the modified one
        rejected_users = [m["content"] for m in p["rejected"][shared - 1:] if m["role"] == "user"]
        assert rejected_users == [t["original"] for t in meta["turns"]]
        assert not any("only for experts" in u for u in rejected_users)
        assert meta["usage"]["prompt_tokens"] > 0
    report = json.loads((tmp_path / "synth" / "pairs.report.json").read_text())
    assert report["pairs"] == 5 and report["user_simulator"]["accepted_first_try"] > 0.5
    for f in tmp_path.rglob("*"):  # the key reaches no file the run wrote
        if f.is_file():
            assert KEY.encode() not in f.read_bytes(), f


def test_output_loads_with_datasets_in_trl_format(tmp_path, monkeypatch, plugins):
    import datasets

    monkeypatch.setenv("TEST_KEY", KEY)
    with server("openai") as srv:
        ctx, _ = run_synth(synth_overrides(tmp_path, srv.url + "/v1", "openai", "TEST_KEY") + ["seeds.limit=4"], plugins)
    ds = datasets.load_dataset("json", data_files=str(ctx.synth_output()), split="train")
    assert len(ds) == 4 and {"chosen", "rejected"} <= set(ds.column_names)
    assert ds[0]["chosen"][-1]["role"] == "assistant" and isinstance(ds[0]["chosen"][0]["content"], str)


def test_variants_shared_user_turns_and_contrast_from_turn(tmp_path, monkeypatch, plugins):
    monkeypatch.setenv("TEST_KEY", KEY)
    with server("openai") as srv:
        ctx, _ = run_synth(synth_overrides(tmp_path, srv.url + "/v1", "openai", "TEST_KEY")
                           + ["seeds.limit=3", "synth.turns=3", "synth.shared_user_turns=true", "synth.contrast_from_turn=2"],
                           plugins)
    for p in read_pairs(ctx.synth_output()):
        turns = p["meta"]["turns"]
        assert [t["contrasted"] for t in turns] == [False, True, True]
        assert turns[0]["modified"] is None
        users = {side: [m["content"] for m in p[side] if m["role"] == "user"] for side in ("chosen", "rejected")}
        assert users["chosen"] == users["rejected"]  # shared user turns
        start = p["meta"]["prefix_messages"]
        assert p["chosen"][start] == p["rejected"][start]  # turn 1 is not contrasted: same answer


def test_malformed_seed_file_names_file_and_line_and_writes_nothing(tmp_path, plugins):
    seeds = tmp_path / "seeds.jsonl"
    good = {"id": "a", "messages": [{"role": "user", "content": "hi"}]}
    seeds.write_text(json.dumps(good) + "\n" + '{"id": "b", "messages": [{"role": "user", "content": ""}]}\n')
    cfg = load_config(None, [f"run.output_dir={tmp_path / 'out'}", "seeds.source=jsonl", f"seeds.path={seeds}"])
    import asyncio

    from music_core.synth.runner import synthesize

    with pytest.raises(RecordError) as err:
        asyncio.run(synthesize(RunContext(cfg, plugins.registry)))
    assert f"{seeds}:2:" in str(err.value) and "empty" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_cli_bad_seed_file_exits_nonzero(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("{not json}\n")
    out = subprocess.run([sys.executable, "-m", "music_core", "synth", "seeds.source=jsonl", f"seeds.path={seeds}",
                          f"run.output_dir={tmp_path / 'out'}"], capture_output=True, text=True)
    assert out.returncode == 3 and f"{seeds}:1: invalid JSON" in out.stderr
    assert "Traceback" not in out.stderr


def _synth_cmd(tmp_path, base_url, extra=()):
    return [sys.executable, "-m", "music_core", "synth", *synth_overrides(tmp_path, base_url, "openai", "TEST_KEY"),
            "seeds.limit=14", "synth.turns=2", "synth.concurrency=2", *extra]


def test_sigkill_and_restart_gives_the_same_file_without_repeating_cached_calls(tmp_path):
    from music_openai.testing import openai_server

    env = {**os.environ, "TEST_KEY": KEY}
    # the uninterrupted reference run
    with openai_server(reply=scripted_reply) as ref_srv:
        subprocess.run(_synth_cmd(tmp_path / "ref", ref_srv.url + "/v1"), check=True, env=env, capture_output=True)
        all_calls = len(ref_srv.requests)
    ref_ids = [p["id"] for p in read_pairs(tmp_path / "ref" / "synth" / "pairs.jsonl")]
    assert len(ref_ids) == 14

    out = tmp_path / "run" / "synth" / "pairs.jsonl"
    with openai_server(latency_s=0.03, reply=scripted_reply) as srv:
        proc = subprocess.Popen(_synth_cmd(tmp_path / "run", srv.url + "/v1"), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 3):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        before_kill = out.read_text().splitlines()
        assert 3 <= len(before_kill) < 14, "the kill must land mid-run"
        with sqlite3.connect(tmp_path / "run" / "llm-cache.sqlite") as db:
            cached = db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
        before = len(srv.requests)
        subprocess.run(_synth_cmd(tmp_path / "run", srv.url + "/v1"), check=True, env=env, capture_output=True)
        restart_calls = len(srv.requests) - before
    ids = [p["id"] for p in read_pairs(out)]
    assert ids == ref_ids  # same ids, same order, no duplicates

    assert out.read_text().splitlines()[: len(before_kill)] == before_kill  # nothing written is lost or changed
    assert restart_calls == all_calls - cached  # every cached call reused, only the missing ones sent
    assert cached > 0


def test_third_party_contrast_plugin_from_examples(tmp_path, install_package, monkeypatch, plugins):
    from conftest import REPO

    install_package(REPO / "examples" / "music-contrast-example")
    from music_core.plugins import get_plugins

    reg = get_plugins().registry
    assert reg.entry("contrast_strategy", "audience-shift").distribution == "music-contrast-example"
    monkeypatch.setenv("TEST_KEY", KEY)
    with server("openai") as srv:
        ctx, stats = run_synth(synth_overrides(tmp_path, srv.url + "/v1", "openai", "TEST_KEY")
                               + ["seeds.limit=3", "synth.strategy=audience-shift"], type("P", (), {"registry": reg}))
    pairs = read_pairs(ctx.synth_output())
    assert len(pairs) == 3 and all(p["meta"]["strategy"] == "audience-shift" for p in pairs)
    assert all("(Answer for " in t["modified"] for p in pairs for t in p["meta"]["turns"])


def test_shards_partition_the_seeds(tmp_path, monkeypatch, plugins):
    monkeypatch.setenv("TEST_KEY", KEY)
    ids = []
    with server("openai") as srv:
        for i in range(2):
            ctx, _ = run_synth(synth_overrides(tmp_path, srv.url + "/v1", "openai", "TEST_KEY")
                               + ["seeds.limit=6", "synth.turns=1", f"synth.shard={i}/2"], plugins)
            ids.append({p["id"] for p in read_pairs(ctx.synth_output())})
        full, _ = run_synth(synth_overrides(tmp_path / "full", srv.url + "/v1", "openai", "TEST_KEY")
                            + ["seeds.limit=6", "synth.turns=1"], plugins)
    assert ids[0].isdisjoint(ids[1]) and ids[0] | ids[1] == {p["id"] for p in read_pairs(full.synth_output())}


def test_changed_config_refuses_to_append(tmp_path, monkeypatch, plugins):
    from music_core.errors import ConfigError

    monkeypatch.setenv("TEST_KEY", KEY)
    with server("openai") as srv:
        base = synth_overrides(tmp_path, srv.url + "/v1", "openai", "TEST_KEY") + ["seeds.limit=2", "synth.turns=1"]
        run_synth(base, plugins)
        with pytest.raises(ConfigError, match="different config"):
            run_synth(base + ["synth.turns=2"], plugins)


@pytest.mark.slow
def test_offline_synth_with_smollm2(tmp_path, plugins):
    """No keys, no network: real pairs from the built-in seeds with SmolLM2 on CPU."""
    ctx, stats = run_synth([f"run.output_dir={tmp_path}", "run.progress=false", "seeds.limit=3", "synth.turns=2"], plugins)
    pairs = read_pairs(ctx.synth_output())
    assert stats["written"] + stats["errors"] + stats["filtered"] == 3 and pairs
    for p in pairs:
        assert p["meta"]["endpoints"]["assistant_simulator"] == "local:smollm2-135m"
        assert all(m["content"].strip() for m in p["chosen"] + p["rejected"])
    report = json.loads((tmp_path / "synth" / "pairs.report.json").read_text())
    assert "usable_share_of_samples" in report["user_simulator"]
