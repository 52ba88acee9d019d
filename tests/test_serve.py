"""``music serve``: the three request shapes against ``music eval``'s scorer (float32, 1e-5), bad
requests, SIGTERM with requests in flight, the batch queue, and one real TRL GRPO step whose
reward comes from the server."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

CONVS = [
    [{"role": "user", "content": "Plan a day in Rome on 50 euros."}, {"role": "assistant", "content": "Walk, eat pizza al taglio."}],
    [{"role": "user", "content": "Plan a day in Rome on 50 euros."}, {"role": "assistant", "content": "Book a private tour."},
     {"role": "user", "content": "Cheaper?"}, {"role": "assistant", "content": "Then the free churches and the Forum on Sunday."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
]


@pytest.fixture(scope="module")
def rm(tmp_path_factory):
    from test_foreign_rm import plain_rm

    return plain_rm(tmp_path_factory.mktemp("rm") / "rm")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(rm: Path, *extra: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "music_core", "serve", "--rm", f"a={rm}", "--port", str(port), *extra],
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc, port
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read().decode()[-3000:]) from None
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("music serve did not start")


def post(port: int, path: str, body: object, raw: bytes | None = None) -> tuple[int, dict, dict]:
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as exc:
        text = exc.read()
        try:
            return exc.code, json.loads(text), dict(exc.headers)
        except json.JSONDecodeError:
            return exc.code, {"text": text.decode(errors="replace")}, dict(exc.headers)


def eval_scores(rm: Path, convs: list) -> list[float]:
    """What `music eval` scores: the scorer the run's evaluators load for this folder."""
    from music_core.config import load_config
    from music_core.context import RunContext
    from music_core.evaluation import load_scorer

    return load_scorer(RunContext(load_config(None)), str(rm)).score(convs)


def test_the_three_request_shapes_give_music_evals_rewards(rm):
    from music_bt.scorer import HFRewardScorer

    expected = eval_scores(rm, CONVS)
    texts = [HFRewardScorer(str(rm)).encoder.render(c) for c in CONVS]
    proc, port = start(rm)
    try:
        status, r, _ = post(port, "/v1/rewards", {"conversations": CONVS, "per_turn": True})
        assert status == 200 and r["truncated"] == [False] * 3
        assert max(abs(a - b) for a, b in zip(r["rewards"], expected)) <= 1e-5
        assert len(r["per_turn"][1]) == 2 and abs(r["per_turn"][1][-1] - expected[1]) <= 1e-5
        assert abs(r["per_turn"][1][0] - eval_scores(rm, [CONVS[1][:2]])[0]) <= 1e-5
        status, g, _ = post(port, "/get_reward", {"query": texts, "prompts": ["x"] * 3, "labels": ["", "", ""]})
        assert status == 200 and set(g) >= {"rewards", "scores", "extra_logs"} and g["extra_logs"] == {}
        assert max(abs(a - b) for a, b in zip(g["rewards"], expected)) <= 1e-5
        status, c, _ = post(port, "/classify", {"model": "a", "input": texts, "use_activation": False})
        assert status == 200 and [d["index"] for d in c["data"]] == [0, 1, 2]
        assert max(abs(d["probs"][0] - e) for d, e in zip(c["data"], expected)) <= 1e-5
        status, s, _ = post(port, "/classify", {"model": "a", "input": texts[0]})  # vLLM's default: a sigmoid
        assert abs(s["data"][0]["probs"][0] - 1 / (1 + math.exp(-expected[0]))) <= 1e-5
        # a long conversation is truncated as in training and says so
        long = [{"role": "user", "content": "word " * 3000}, {"role": "assistant", "content": "ok"}]
        status, t, _ = post(port, "/v1/rewards", {"conversations": [long]})
        assert status == 200 and t["truncated"] == [True]
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        assert "music_serve_requests_total" in metrics and "music_serve_batch_size_bucket" in metrics
    finally:
        proc.terminate()
        proc.wait(timeout=60)


BAD = [
    ("/v1/rewards", None, b"not json"), ("/v1/rewards", None, b"[1, 2]"), ("/v1/rewards", {}, None),
    ("/v1/rewards", {"conversations": []}, None), ("/v1/rewards", {"conversations": "hi"}, None),
    ("/v1/rewards", {"conversations": [[{"role": "user", "content": "q"}]]}, None),  # ends with the user
    ("/v1/rewards", {"conversations": [[{"role": "robot", "content": "q"}, {"role": "assistant", "content": "a"}]]}, None),
    ("/v1/rewards", {"conversations": [[{"role": "user", "content": 5}, {"role": "assistant", "content": "a"}]]}, None),
    ("/v1/rewards", {"conversations": [["hello"]]}, None), ("/v1/rewards", {"conversations": [CONVS[0]], "per_turn": "yes"}, None),
    ("/v1/rewards", {"conversations": [CONVS[0]], "model": "nope"}, None), ("/v1/rewards", {"conversations": [CONVS[0]], "model": 7}, None),
    ("/v1/rewards", {"conversations": [CONVS[0]] * 600}, None),  # too many: 413
    ("/get_reward", {"query": []}, None), ("/get_reward", {"query": [1, 2]}, None), ("/get_reward", {"prompts": ["x"]}, None),
    ("/get_reward", {"query": ["a"], "labels": "x"}, None), ("/classify", {"input": [None]}, None),
    ("/classify", {"input": ["a"], "use_activation": "no"}, None), ("/classify", None, b"\xff\xfe"),
    ("/v1/rewards", None, b"{" + b"x" * (9 * 1024 * 1024) + b"}"),  # over the body limit: 413
]


def test_twenty_kinds_of_bad_request_get_4xx_naming_the_field_and_the_server_keeps_serving(rm):
    expected = eval_scores(rm, CONVS[:1])
    proc, port = start(rm)
    try:
        for path, body, raw in BAD:
            status, r, _ = post(port, path, body, raw)
            assert 400 <= status < 500, (path, body if raw is None else raw[:40], status, r)
            assert r.get("error"), r
        status, r, _ = post(port, "/v1/rewards", {"conversations": [CONVS[1]], "model": "nope"})
        assert status == 404 and r["field"] == "model"
        status, r, _ = post(port, "/v1/rewards", {"conversations": [[{"role": "user", "content": "q"}]]})
        assert r["field"] == "conversations[0]"
        status, r, _ = post(port, "/v1/rewards", {"conversations": CONVS[:1]})
        assert status == 200 and abs(r["rewards"][0] - expected[0]) <= 1e-5
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert proc.returncode == 0


def test_sigterm_with_requests_in_flight_answers_them_or_closes_cleanly_and_exits_0(rm):
    proc, port = start(rm, "--max-wait-ms", "50")
    results: list[object] = []

    def client(k: int) -> None:
        try:
            results.append(post(port, "/v1/rewards", {"conversations": [CONVS[k % 3]] * 8})[0])
        except (urllib.error.URLError, ConnectionError, OSError) as exc:  # a clean refusal once it stops listening
            results.append(type(exc).__name__)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(24)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(timeout=90)
    assert proc.wait(timeout=90) == 0
    assert len(results) == 24 and all(r == 200 or isinstance(r, str) for r in results), results
    assert results.count(200) >= 1


def test_the_batch_queue_batches_concurrent_requests_and_a_failure_answers_only_its_batch():
    from music_serve.batcher import BatchQueue, QueueFull, ScorerFailed
    from music_serve.metrics import Metrics

    calls: list[int] = []

    def score(batch):
        calls.append(len(batch))
        if any(ids == [666] for ids in batch):
            raise RuntimeError("boom")
        return [float(sum(ids)) for ids in batch]

    async def go():
        q = BatchQueue("t", score, Metrics(), max_wait_s=0.05, max_batch_tokens=100, max_items=10)
        q.start()
        together = await asyncio.gather(*(q.submit([[i, i]]) for i in range(5)))
        with pytest.raises(ScorerFailed):
            await q.submit([[666]])
        after = await q.submit([[1, 2, 3]])
        with pytest.raises(QueueFull):
            await q.submit([[1]] * 11)
        await q.drain()
        return together, after

    together, after = asyncio.run(go())
    assert [r[0] for r in together] == [0.0, 2.0, 4.0, 6.0, 8.0] and after == [6.0]
    assert calls[0] == 5  # five concurrent requests, one scoring call


def test_one_trl_grpo_step_rewarded_by_the_server(rm, tmp_path):
    trl = pytest.importorskip("trl", reason="trl (a dev dependency) is not installed")
    from datasets import Dataset
    from music_serve.adapters import trl_reward
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from music_core.models import resolve_model

    policy = resolve_model("smollm2-135m")
    proc, port = start(rm)
    seen: list[list[float]] = []
    reward = trl_reward(f"http://127.0.0.1:{port}")

    def recorded(prompts, completions, **kw):
        out = reward(prompts, completions, **kw)
        seen.append(out)
        return out

    recorded.__name__ = "music_reward"
    try:
        data = Dataset.from_list([{"prompt": [{"role": "user", "content": "Name a fruit."}]},
                                  {"prompt": [{"role": "user", "content": "Name a colour."}]}])
        cfg = trl.GRPOConfig(output_dir=str(tmp_path / "grpo"), max_steps=1, per_device_train_batch_size=2,
                             num_generations=2, max_completion_length=8, logging_steps=1, report_to=[], use_cpu=True,
                             bf16=False, save_strategy="no", learning_rate=1e-6)
        model = AutoModelForCausalLM.from_pretrained(policy)
        tok = AutoTokenizer.from_pretrained(policy)
        trainer = trl.GRPOTrainer(model=model, reward_funcs=recorded, args=cfg, train_dataset=data,
                                  processing_class=tok)
        trainer.train()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert seen and len(seen[0]) == 2 and all(isinstance(x, float) for x in seen[0])
    logged = [h for h in trainer.state.log_history if any("music_reward" in k for k in h)]
    assert logged, trainer.state.log_history
