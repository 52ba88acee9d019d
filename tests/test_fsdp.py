"""FSDP2 on CPU (issue 14): ``accelerate launch --config_file configs/accelerate_fsdp.yaml --cpu``
with two gloo processes shards the net with torch's ``fully_shard`` (accelerate alone would run
plain data parallelism on CPUs). The loss curve equals one process's, the export gathered from
the shards scores as one process's export, a SIGKILL mid-run resumes exactly, and LoRA shards too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bt_helpers import SLOW_TRAIN_MAIN, tiny_decoder, write_pairs

ROOT = Path(__file__).resolve().parents[1]
FSDP_LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "configs/accelerate_fsdp.yaml"),
               "--num_processes", "2", "--mixed_precision", "no", "--dynamo_backend", "no"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp")
    return {"dec": tiny_decoder(root / "dec", layers=3), "data": write_pairs(root / "d.jsonl"),
            "held": write_pairs(root / "h.jsonl", n=8, seed=1), "main": _write(root / "slow_main.py", SLOW_TRAIN_MAIN)}


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _keys(setup, out: Path, *extra: str) -> list[str]:
    return ["run.progress=false", f"run.output_dir={out}", f"train.train_data={setup['data']}",
            f"train.eval_data={setup['held']}", f"train.backbone={setup['dec']}", "train.head=last-token",
            "train.precision=fp32", "train.max_steps=6", "train.batch_size=8", "train.tokens_per_micro_batch=256",
            "train.log_every=1", "train.save_every=2", *extra]


def _run(cmd: list[str], env: dict | None = None) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout + out.stderr


def _kill_tree(proc: subprocess.Popen) -> None:
    import psutil

    procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    for p in procs:
        p.send_signal(signal.SIGKILL)
    psutil.wait_procs(procs, timeout=30)
    proc.wait()


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in open(out / "rm" / "train_log.jsonl")]


def _rewards(setup, rm: Path) -> list[float]:
    from music_bt.scorer import HFRewardScorer

    pairs = [json.loads(line) for line in open(setup["held"])]
    return HFRewardScorer(str(rm)).score([c for p in pairs for c in (p["chosen"], p["rejected"])])


def _same_run(setup, one: Path, two: Path) -> None:
    a, b = _log(one), _log(two)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    assert max(abs(x["loss"] - y["loss"]) for x, y in zip(a, b)) < 1e-4  # the loss curve
    ma = json.loads((one / "rm" / "metrics.json").read_text())
    mb = json.loads((two / "rm" / "metrics.json").read_text())
    assert abs(ma["eval_loss"] - mb["eval_loss"]) < 1e-4
    assert mb["export_max_abs_difference"] <= 1e-4  # the gathered export reloads and scores as trained
    ra, rb = _rewards(setup, one / "rm"), _rewards(setup, two / "rm")
    assert max(abs(x - y) for x, y in zip(ra, rb)) < 1e-4


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_fsdp2_on_two_cpu_processes_matches_one_process(setup, tmp_path, lora):
    extra = ("train.lora.enabled=true", "train.lora.r=4", "train.lr=5e-3") if lora else ()
    _run([sys.executable, "-m", "music_core", "train", *_keys(setup, tmp_path / "one", *extra)])
    _run([*FSDP_LAUNCH, "-m", "music_core", "train", *_keys(setup, tmp_path / "two", *extra)])
    metrics = json.loads((tmp_path / "two" / "rm" / "metrics.json").read_text())
    assert metrics["distributed"] == "fsdp2 (torch fully_shard, gloo), 2 processes"
    _same_run(setup, tmp_path / "one", tmp_path / "two")


def test_fsdp2_resumes_exactly_after_sigkill(setup, tmp_path):
    env = {**os.environ, "TEST_STEP_DELAY_S": "0.3"}  # room to kill between checkpoints
    _run([*FSDP_LAUNCH, str(setup["main"]), "train", *_keys(setup, tmp_path / "ref")], env)
    run = tmp_path / "run"
    proc = subprocess.Popen([*FSDP_LAUNCH, str(setup["main"]), "train", *_keys(setup, run)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list((run / "rm" / "checkpoints").glob("step-0000004")):
        time.sleep(0.05)
    _kill_tree(proc)  # the launcher and both workers (torchrun starts them in sessions of their own)
    assert not (run / "rm" / "metrics.json").exists(), "the kill must land before the end"
    rerun = _run([*FSDP_LAUNCH, str(setup["main"]), "train", *_keys(setup, run)], env)
    got = json.loads((run / "rm" / "metrics.json").read_text())
    assert got["resumed_from_step"] >= 2, rerun[-3000:]
    _same_run(setup, tmp_path / "ref", run)
