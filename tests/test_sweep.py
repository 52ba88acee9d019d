"""``music sweep``: variants as whole runs in their own processes, steps with the same inputs made
once, a comparison with paired differences and plots, kill and resume, the submitit launcher,
tracker logs under TRL's metric names; against a loopback LLM and tiny backbones."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bt_helpers import tiny_decoder, tiny_encoder
from llm_helpers import KEY
from music_openai.testing import openai_server
from synth_helpers import scripted_reply, synth_overrides


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    root = tmp_path_factory.mktemp("backbones")
    return {"enc": str(tiny_encoder(root / "enc")), "dec": str(tiny_decoder(root / "dec"))}


def base(tmp_path: Path, url: str, *extra: str) -> list[str]:
    args = [a for a in synth_overrides(tmp_path, url, "openai", "TEST_KEY") if not a.startswith("run.output_dir")]
    return args + ["seeds.limit=3", "synth.turns=1", "audit.calibration_pairs=2", "eval.evaluators=[pairwise-accuracy]",
                   "mix.original.limit=30", "train.epochs=1", "train.batch_size=8", "train.max_length=128",
                   "train.save_every=0", *extra]


def sweep(tmp_path: Path, *args: str, background: bool = False):
    cmd = [sys.executable, "-m", "music_core", "sweep", f"sweep.output_dir={tmp_path / 'sw'}", *args]
    env = {**os.environ, "TEST_KEY": KEY, "HF_HUB_OFFLINE": "1"}
    if background:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


def hashes(root: Path, step: str) -> list[str]:
    return sorted(p.name for p in (root / "shared" / step).iterdir() if p.is_dir()) if (root / "shared" / step).exists() else []


def test_a_sweep_over_backbones_and_heads_synthesizes_once_and_compares_four_rms(tmp_path, backbones):
    with openai_server(reply=scripted_reply, seeded=True) as srv:
        single = subprocess.run([sys.executable, "-m", "music_core", "run", f"run.output_dir={tmp_path / 'single'}",
                                 *base(tmp_path, srv.url + "/v1", f"train.backbone={backbones['enc']}",
                                       "run.stages=[synth,audit]")],
                                env={**os.environ, "TEST_KEY": KEY, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
        assert single.returncode == 0, single.stderr[-3000:]
        one_run = len(srv.requests)
        out = sweep(tmp_path, *base(tmp_path, srv.url + "/v1", "train.trackers=[tensorboard]"),
                    f"train.backbone={backbones['enc']},{backbones['dec']}", "train.head=auto,mean-pool", "--jobs", "2")
        assert out.returncode == 0, out.stderr[-3000:]
        # synthesis and the audit were made once for all four variants: the calls of one run, no more
        assert len(srv.requests) - one_run == one_run
    root = tmp_path / "sw"
    assert len(hashes(root, "synth")) == 1 and len(hashes(root, "mix")) == 1 and len(hashes(root, "audit")) == 1
    assert len(hashes(root, "train-music")) == 4
    variants = [p for p in root.iterdir() if (p / "report.json").exists()]
    assert len(variants) == 4 and all((v / "synth").is_symlink() for v in variants)
    report = json.loads((root / "report.json").read_text())
    rows = report["variants"]
    assert len(rows) == 4 and all("held-out accuracy" in r["metrics"] for r in rows)
    ref = report["reference"]
    assert all(r["paired_vs_reference"].get("held-out accuracy") for r in rows if r["variant"] != ref)
    md = (root / "report.md").read_text()
    assert "paired vs reference" in md and "(reference)" in md and md.count("\n| ") >= 5
    assert (root / "report.csv").read_text().count("\n") == 5
    assert report["figures"] and all(Path(f).stat().st_size > 1000 for f in report["figures"])
    # tracker logs under TRL's names, each run named by its variant and grouped by the sweep
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for folder in {e.parent for e in (root / "shared" / "train-music").rglob("events.out.tfevents*")}:
        acc = EventAccumulator(str(folder))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert {"loss", "accuracy", "margin", "min_reward", "mean_reward", "max_reward", "num_tokens", "eval_accuracy"} <= tags


def test_a_sweep_over_turns_trains_the_baseline_once(tmp_path, backbones):
    with openai_server(reply=scripted_reply, seeded=True) as srv:
        out = sweep(tmp_path, *base(tmp_path, srv.url + "/v1", f"train.backbone={backbones['enc']}"), "synth.turns=1,2")
    assert out.returncode == 0, out.stderr[-3000:]
    root = tmp_path / "sw"
    assert len(hashes(root, "synth")) == 2 and len(hashes(root, "train-music")) == 2
    assert len(hashes(root, "train-baseline")) == 1  # the original data does not depend on synthesis


def test_sigkill_mid_sweep_then_rerun_redoes_nothing_finished_and_gives_the_same_results(tmp_path, backbones):
    with openai_server(reply=scripted_reply, seeded=True) as srv:
        args = [*base(tmp_path, srv.url + "/v1"), f"train.backbone={backbones['enc']}",
                "train.head=auto,mean-pool,last-token", "--jobs", "2"]
        ref = sweep(tmp_path / "ref", *args)
        assert ref.returncode == 0, ref.stderr[-3000:]
        proc = sweep(tmp_path, *args, background=True)
        root = tmp_path / "sw"
        deadline = time.time() + 300
        while time.time() < deadline and not any(root.glob("*/report.json")):
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        done = [p.parent for p in root.glob("*/report.json")]
        assert done and len(done) < 3, "the kill must land with a variant finished and others not"
        before = {str(m): m.stat().st_mtime_ns for d in done for m in (d / "stages").glob("*.json")}
        out = sweep(tmp_path, *args[:-2])  # one at a time now
        assert out.returncode == 0, out.stderr[-3000:]
    assert {str(m): m.stat().st_mtime_ns for d in done for m in (d / "stages").glob("*.json")} == before
    ours = {r["variant"]: r["metrics"] for r in json.loads((root / "report.json").read_text())["variants"]}
    theirs = {r["variant"]: r["metrics"] for r in json.loads((tmp_path / "ref" / "sw" / "report.json").read_text())["variants"]}
    assert ours == theirs


def test_the_submitit_launcher_runs_a_two_variant_sweep_with_its_local_executor(tmp_path, backbones):
    pytest.importorskip("submitit", reason="submitit (a dev dependency) is not installed")
    with openai_server(reply=scripted_reply, seeded=True) as srv:
        out = sweep(tmp_path, *base(tmp_path, srv.url + "/v1", f"train.backbone={backbones['enc']}"),
                    "train.head=auto,mean-pool", "--launcher", "submitit", "sweep.launcher_options.cluster=local",
                    f"sweep.launcher_options.folder={tmp_path / 'submitit' / '%j'}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(json.loads((tmp_path / "sw" / "report.json").read_text())["variants"]) == 2
    assert list((tmp_path / "submitit").glob("*/*_result.pkl"))  # submitit's own record of each job


def test_bad_sweeps_fail_before_anything_runs(tmp_path):
    out = sweep(tmp_path, "synth.turnz=1,2")
    assert out.returncode == 2 and "synth.turnz" in out.stderr and "sweep variant 'synth.turnz=1'" in out.stderr
    out = sweep(tmp_path, "synth.turns=1,many")
    assert out.returncode == 2 and "synth.turns=many" in out.stderr
    out = sweep(tmp_path, "synth.turns=3")
    assert out.returncode == 2 and "empty sweep" in out.stderr
    assert not (tmp_path / "sw").exists()
    out = sweep(tmp_path, "synth.turns=2,2,3", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("\n  synth.turns=") == 2 and "the same config" in out.stdout


def test_the_submitit_launcher_submits_one_array_respects_jobs_and_books_a_killed_job_as_failed(tmp_path, monkeypatch):
    """Three variants as one job array with submitit's local executor; sweep.jobs=2 holds (no
    more than two running at once, from their own start/end stamps); a task whose process is
    killed under it is booked as failed, not raised."""
    pytest.importorskip("submitit", reason="submitit (a dev dependency) is not installed")
    import os

    from music_launchers.slurm import SubmititLauncher

    from music_core.contracts import VariantJob

    stamp = ("import sys, time, os; open(sys.argv[1], 'a').write(f'{time.time()} start\\n'); time.sleep(1.5); "
             "open(sys.argv[1], 'a').write(f'{time.time()} end\\n')")
    kill = "import os, signal; os.kill(os.getppid(), signal.SIGKILL)"  # the array task itself dies
    jobs = [VariantJob(f"v{k}", [sys.executable, "-c", stamp, str(tmp_path / f"v{k}.stamps")], str(tmp_path),
                       dict(os.environ), str(tmp_path / f"v{k}.log")) for k in range(3)]
    jobs.append(VariantJob("killed", [sys.executable, "-c", kill], str(tmp_path), dict(os.environ), str(tmp_path / "k.log")))
    import submitit

    calls: list[str] = []
    for method in ("map_array", "submit"):
        original = getattr(submitit.AutoExecutor, method)
        monkeypatch.setattr(submitit.AutoExecutor, method,
                            lambda self, *a, _m=method, _o=original, **k: (calls.append(_m), _o(self, *a, **k))[1])
    launcher = SubmititLauncher({"cluster": "local", "folder": str(tmp_path / "submitit" / "%j")})
    codes = launcher.launch(jobs, parallel=2)
    assert calls == ["map_array"]  # one array for every variant
    assert codes[:3] == [0, 0, 0] and codes[3] != 0
    assert "did not complete" in (tmp_path / "k.log").read_text()
    events = sorted((float(t), kind) for k in range(3)
                    for t, kind in (line.split() for line in (tmp_path / f"v{k}.stamps").read_text().splitlines()))
    running, most = 0, 0
    for _, kind in events:
        running += 1 if kind == "start" else -1
        most = max(most, running)
    assert most == 2


def test_the_comparison_takes_each_evaluators_headline_from_its_class_and_names_none(plugins):
    """Each key of a run's evaluations is looked up in the registry and asked for its headline;
    an evaluator whose plugin is not loaded gets the contract's default reading; compare.py
    itself names no registered evaluator."""
    from music_core.sweep import compare

    hits = {"a/d0/repeat": 1.0, "a/d1/repeat": 0.5, "b/d1/off-topic": 0.0}
    acc = lambda v: {"n": 2, "accuracy": v, "ci95": [0.1, 0.9]}  # noqa: E731
    report = {"evaluations": {
        "depth": {"models": {"music": {"by_depth": {"0": acc(1.0)}, "d>=1": acc(0.25)}},
                  "item_hits": {"music": hits}, "item_depths": {"a/d0/repeat": 0, "a/d1/repeat": 1, "b/d1/off-topic": 1}},
        "pairwise-accuracy": {"pairs": 4, "models": {"music": {"accuracy": 0.75}}, "item_hits": {"music": {"p": 1}}},
        "not-installed": {"models": {"music": {"accuracy": acc(0.6)}}},
        "skipped": {"rmb": "no data"}}}
    m = compare.metrics(report, plugins.registry)
    assert list(m) == ["depth accuracy d = 0", "depth accuracy d >= 1", "held-out accuracy", "not-installed accuracy"]
    assert m["depth accuracy d >= 1"]["value"] == 0.25 and set(m["depth accuracy d >= 1"]["hits"]) == {"a/d1/repeat", "b/d1/off-topic"}
    assert m["held-out accuracy"]["hits"] == {"p": 1} and m["not-installed accuracy"]["ci95"] == [0.1, 0.9]
    source = Path(compare.__file__).read_text()
    assert not [n for n in plugins.registry.names("evaluator") if f'"{n}"' in source or f"'{n}'" in source]
