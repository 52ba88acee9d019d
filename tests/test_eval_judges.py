"""LLM judges scored beside the RMs (``eval.judges`` / ``--judge NAME=ENDPOINT``): a loopback
OpenAI-compatible judge, driven through the real ``openai`` client, prefers the side whose answer
carries the larger planted ``judge=N`` (and the first position when they are equal: a position
flip), so its accuracy, flips and paired comparisons are computed by hand; a rerun makes no
request; a transient failure is retried by the next run; a misconfigured endpoint stops the run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import scripted_trainer_plugin
from llm_helpers import KEY
from music_openai.testing import openai_server

from music_core.config import load_config
from music_core.context import RunContext
from music_core.contracts import RewardScorer
from music_core.errors import MusicError
from music_core.evaluation import run_evaluator
from music_core.judge_scoring import JudgesIncomplete
from music_core.plugins import temporary_plugin
from music_core.stats import paired_difference
from music_core.testing.loopback import FaultPlan

FIX = Path(__file__).parent / "fixtures" / "human"
PLANT = re.compile(r"judge=(-?\d+)")
BLOCKS = re.compile(r"\[Conversation A\]\n(.*?)\n\n\[Conversation B\]\n(.*?)\n\nWhich", re.S)


class MarkerScorer(RewardScorer):
    """Reward = the number after ``<folder name>=`` in the last message."""

    def __init__(self, key: str):
        self.key = key

    def score(self, conversations):
        found = [re.search(rf"\b{self.key}=(-?\d+)", c[-1]["content"]) for c in conversations]
        return [float(m.group(1)) if m else float(len(c[-1]["content"])) for m, c in zip(found, conversations)]


def MarkerPlugin() -> object:
    return scripted_trainer_plugin("judge-marker-test", MarkerScorer)


def planted(block: str) -> int:
    """The planted preference of the last assistant answer in a rendered conversation (the
    helpsteer3 fixture plants b=N: the judge then agrees with RM b)."""
    last = [ln for ln in block.splitlines() if ln.startswith("Assistant:")][-1]
    m = PLANT.search(last) or re.search(r"\bb=(-?\d+)", last)
    return int(m.group(1))


def scripted_judge(messages: list[dict], index: int) -> str:
    a, b = BLOCKS.search(messages[-1]["content"]).groups()
    pa, pb = planted(a), planted(b)
    winner = "A" if pa >= pb else "B"  # equal: always the first position (a flip across the two orders)
    return json.dumps({"reasons": "scripted", "winner": winner})


def conv(q: str, answer: str) -> list[dict]:
    return [{"role": "user", "content": q}, {"role": "assistant", "content": answer}]


# (RM a's chosen reward, RM a's rejected reward, judge's planted chosen, judge's planted rejected)
PAIRS = {"p1": (2, 1, 1, 0), "p2": (0, 1, 1, 0), "p3": (2, 1, 0, 1), "p4": (2, 1, 1, 1), "p5": (0, 1, 3, 3),
         "p6": (1, 0, 2, 0)}
JUDGE_HITS = [1.0, 1.0, 0.0, 0.5, 0.5, 1.0]  # p4, p5: equal plants, the judge says A in both orders
RM_HITS = [1, 0, 1, 1, 0, 1]


def write_pairs(path: Path) -> Path:
    with path.open("w") as fh:
        for pid, (ca, ra, cj, rj) in PAIRS.items():
            q = f"Question {pid}?"
            fh.write(json.dumps({"id": pid, "source": "test", "chosen": conv(q, f"Good {pid}. [a={ca} judge={cj}]"),
                                 "rejected": conv(q, f"Bad {pid}. [a={ra} judge={rj}]")}) + "\n")
    return path


def rm_dir(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "rms" / "a").mkdir(parents=True, exist_ok=True)
    (tmp_path / "rms" / "a" / "music_rm.json").write_text(json.dumps({"trainer": "judge-marker-test"}))
    return {"a": str(tmp_path / "rms" / "a")}


def judge_args(url: str, *extra: str) -> list[str]:
    return ["models.jep.provider=openai", "models.jep.model=judge-model", f"models.jep.base_url={url}",
            "models.jep.api_key_env=TEST_KEY", "models.jep.retry_backoff_s=0.01", "eval.judges.loop=jep",
            "eval.judge_options.verdict=text", *extra]


def evaluate(tmp_path, plugins, name: str, *overrides: str) -> dict:
    with temporary_plugin(MarkerPlugin(), "judge-marker"):
        cfg = load_config(None, [f"run.output_dir={tmp_path}", "run.progress=false", *overrides], evaluators=(name,))
        out = run_evaluator(RunContext(cfg, plugins.registry), name, rm_dir(tmp_path))
    return {**json.loads(Path(out["results_path"]).read_text()), "_md": Path(out["markdown_path"]).read_text()}


def test_a_scripted_judge_scores_exactly_the_hand_computed_accuracy_and_a_rerun_makes_no_request(
        tmp_path, plugins, monkeypatch):
    monkeypatch.setenv("TEST_KEY", KEY)
    data = write_pairs(tmp_path / "pairs.jsonl")
    with openai_server(reply=scripted_judge, seeded=True) as srv:
        r = evaluate(tmp_path, plugins, "pairwise-accuracy", f"eval.pairwise.data={data}", *judge_args(srv.url + "/v1"))
        calls = len(srv.requests)
        again = evaluate(tmp_path, plugins, "pairwise-accuracy", f"eval.pairwise.data={data}",
                         *judge_args(srv.url + "/v1"))
        assert len(srv.requests) == calls == 2 * len(PAIRS)  # both orders, once; the rerun asks nothing
    j = r["judges"]["judges"]["loop"]
    assert (j["n"], j["missing"], j["flips"], j["unread"]) == (6, 0, 2, 0)
    assert j["accuracy"]["accuracy"] == round(sum(JUDGE_HITS) / 6, 4) == 0.6667
    assert j["flip_rate"] == round(2 / 6, 4) and j["verdicts"] == {"valid": 3, "invalid": 1, "flip": 2}
    assert j["item_hits"] == dict(zip(PAIRS, JUDGE_HITS))
    assert r["judges"]["reward_models"]["a"]["accuracy"] == round(sum(RM_HITS) / 6, 4)
    assert r["models"]["a"]["accuracy"] == sum(RM_HITS) / 6  # the RM's own row is untouched
    rm_vs_judge = r["judges"]["paired"][0]
    expected = paired_difference([float(h) for h in RM_HITS], JUDGE_HITS)
    assert (rm_vs_judge["a"], rm_vs_judge["b"]) == ("a", "judge loop")
    assert {k: rm_vs_judge[k] for k in expected} == {k: (list(v) if isinstance(v, tuple) else v)
                                                     for k, v in expected.items()}
    assert "| judge loop (jep: openai:judge-model) | 0.667 |" in r["_md"] and "a vs judge loop" in r["_md"]
    assert again["judges"]["judges"]["loop"]["wire_calls"] == 0
    assert again["judges"]["judges"]["loop"]["item_hits"] == j["item_hits"]
    records = (tmp_path / "eval" / "pairwise-accuracy" / "judges" / "loop.jsonl").read_text().splitlines()
    assert len(records) == 6 and KEY not in "".join(records)


def test_the_judge_sits_beside_the_rms_on_helpsteer3_items(tmp_path, plugins, monkeypatch):
    monkeypatch.setenv("TEST_KEY", KEY)
    with openai_server(reply=scripted_judge, seeded=True) as srv:
        r = evaluate(tmp_path, plugins, "helpsteer3", f"eval.helpsteer3.data={FIX / 'helpsteer3.jsonl'}",
                     *judge_args(srv.url + "/v1"))
    # by hand from the fixture: the judge follows the planted b=N of each response (RM b's
    # reward), the first position when they are equal; chosen is the response people preferred
    hits = []
    for line in (FIX / "helpsteer3.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["overall_preference"] == 0:
            continue
        b1, b2 = (int(re.search(r"\bb=(-?\d+)", row[k]).group(1)) for k in ("response1", "response2"))
        chosen, rejected = (b1, b2) if row["overall_preference"] < 0 else (b2, b1)
        hits.append(1.0 if chosen > rejected else 0.0 if chosen < rejected else 0.5)
    j = r["judges"]["judges"]["loop"]
    assert j["n"] == r["items"] == len(hits) == 6
    assert j["accuracy"]["accuracy"] == round(sum(hits) / len(hits), 4)
    assert j["flips"] == hits.count(0.5)
    assert r["judges"]["reward_models"]["a"]["accuracy"] == r["models"]["a"]["accuracy"]["accuracy"]
    assert "LLM judges beside the reward models" in r["_md"]


def test_a_transient_failure_is_retried_by_the_next_run_and_never_booked(tmp_path, plugins, monkeypatch):
    monkeypatch.setenv("TEST_KEY", KEY)
    data = write_pairs(tmp_path / "pairs.jsonl")
    args = (f"eval.pairwise.data={data}", "models.jep.max_retries=0", "models.jep.concurrency=1")
    with openai_server(reply=scripted_judge, seeded=True, faults=FaultPlan(script=[None, None, "500"])) as srv:
        with pytest.raises(JudgesIncomplete) as info:
            evaluate(tmp_path, plugins, "pairwise-accuracy", *args, *judge_args(srv.url + "/v1"))
        assert info.value.exit_code == 75 and "rerun" in str(info.value)
        partial = json.loads((tmp_path / "eval" / "pairwise-accuracy" / "results.json").read_text())
        assert partial["judges"]["judges"]["loop"]["missing"] == 1
        assert partial["judges"]["n"] == 5  # the report compares on the items judged so far
        before = len(srv.requests)
        r = evaluate(tmp_path, plugins, "pairwise-accuracy", *args, *judge_args(srv.url + "/v1"))
        assert len(srv.requests) - before == 1  # only the call that failed: its other order is in the call cache
    j = r["judges"]["judges"]["loop"]
    assert j["missing"] == 0 and j["item_hits"] == dict(zip(PAIRS, JUDGE_HITS))


def test_a_misconfigured_judge_endpoint_stops_the_run_naming_it(tmp_path, plugins, monkeypatch):
    monkeypatch.setenv("TEST_KEY", KEY)
    data = write_pairs(tmp_path / "pairs.jsonl")
    with openai_server(reply=scripted_judge, seeded=True) as srv:
        with pytest.raises(MusicError) as info:
            evaluate(tmp_path, plugins, "pairwise-accuracy", f"eval.pairwise.data={data}",
                     *judge_args(srv.url + "/v1", "models.jep.model=missing-model", "models.jep.concurrency=1"))
        assert len(srv.requests) == 1  # stopped at the first answer: nothing more was sent
    assert "'jep'" in str(info.value) and "judge:loop" in str(info.value) and KEY not in str(info.value)
    assert not (tmp_path / "eval" / "pairwise-accuracy" / "judges" / "loop.jsonl").read_text().strip()
    with pytest.raises(MusicError, match="eval.judges.loop"):
        load_config(None, ["eval.judges.loop=nowhere"])


def test_the_dry_run_prices_the_judges_calls(tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl")
    out = subprocess.run([sys.executable, "-m", "music_core", "run", "--dry-run", f"run.output_dir={tmp_path}",
                          "run.preflight=false", "eval.evaluators=[pairwise-accuracy]", f"eval.pairwise.data={data}",
                          "models.jep.provider=openai", "models.jep.model=judge-model", "eval.judges.loop=jep"],
                         capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    row = next(ln for ln in out.stdout.splitlines() if ln.strip().startswith("judge:loop"))
    assert "jep (openai:judge-model)" in row and row.split()[4] == "12"  # 6 pairs, both orders


def test_the_preflight_names_a_judge_endpoint_whose_key_is_not_set(tmp_path, plugins, monkeypatch):
    from music_core.preflight import find_problems

    monkeypatch.delenv("TEST_KEY", raising=False)
    data = write_pairs(tmp_path / "pairs.jsonl")
    cfg = load_config(None, [f"run.output_dir={tmp_path}", "eval.evaluators=[pairwise-accuracy]",
                             f"eval.pairwise.data={data}", *judge_args("http://127.0.0.1:9/v1")])
    problems = find_problems(RunContext(cfg, plugins.registry), ["eval-pairwise-accuracy"], ask_hub=False)
    assert [p.key for p in problems] == ["models.jep.api_key_env"]
    assert "judge:loop" in problems[0].message and "TEST_KEY" in problems[0].message


def always_first(messages: list[dict], index: int) -> str:
    return json.dumps({"reasons": "the first one", "winner": "A"})


def depth_conversations(path: Path) -> Path:
    rows = [{"id": f"c{t}", "messages": [m for k in range(3) for m in (
        {"role": "user", "content": f"Topic {t}: question {k}?"},
        {"role": "assistant", "content": f"Answer {k} on topic {t}. More detail here."})]} for t in range(1, 5)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


EVALUATORS = {
    "arena": ("arena", lambda tmp: [f"eval.arena.data={FIX / 'arena.jsonl'}"], lambda r: r["models"]["a"]["accuracy"]["n"]),
    "ppe-human": ("ppe-human", lambda tmp: [f"eval.ppe_human.data={FIX / 'ppe_human.jsonl'}"],
                  lambda r: r["models"]["a"]["accuracy"]["n"]),
    "mt-bench-human": ("mt-bench-human", lambda tmp: [f"eval.mt_bench_human.data={FIX / 'mt_bench_human.jsonl'}"],
                       lambda r: r["models"]["a"]["accuracy"]["n"]),
    "rmb": ("rmb", lambda tmp: [f"eval.rmb.data={Path(__file__).parent / 'fixtures' / 'rmb' / 'RMB_dataset'}",
                                "records.max_invalid_fraction=0.3"], lambda r: r["items"]["pairwise"]),
    "rewardbench": ("rewardbench", lambda tmp: ["eval.rewardbench.path=builtin"], lambda r: r["examples"]),
    "depth": ("depth", lambda tmp: [f"eval.depth.conversations={depth_conversations(tmp / 'convs.jsonl')}",
                                    "eval.depth.bootstrap=200"], lambda r: r["pairs"]),
}


@pytest.mark.parametrize("evaluator", list(EVALUATORS))
def test_every_pairwise_evaluator_scores_the_judge_on_its_own_items(tmp_path, plugins, monkeypatch, evaluator):
    monkeypatch.setenv("TEST_KEY", KEY)
    name, data, items = EVALUATORS[evaluator]
    with openai_server(reply=always_first, seeded=True) as srv:
        r = evaluate(tmp_path, plugins, name, *data(tmp_path), *judge_args(srv.url + "/v1"))
    j = r["judges"]["judges"]["loop"]
    n = items(r)
    assert n > 0 and j["n"] == n and j["missing"] == 0
    assert j["flips"] == n and j["accuracy"]["accuracy"] == 0.5  # a judge that always says A decides nothing
    assert [(p["a"], p["b"]) for p in r["judges"]["paired"]] == [("a", "judge loop")]
    assert "| judge loop (jep: openai:judge-model) | 0.500 |" in r["_md"]
    if evaluator == "rewardbench":
        assert set(j["sections"].values()) == {50.0}
    if evaluator == "depth":
        assert {a["accuracy"] for a in j["figures"]["by_depth"].values()} == {0.5}
        assert "| judge loop |" in r["_md"]


@pytest.mark.slow
def test_the_offline_local_judge_scores_helpsteer3(tmp_path, plugins):
    r = evaluate(tmp_path, plugins, "helpsteer3", f"eval.helpsteer3.data={FIX / 'helpsteer3.jsonl'}",
                 "eval.judges.local=local")
    j = r["judges"]["judges"]["local"]
    assert j["n"] == 6 and j["missing"] == 0 and j["provider"] == "local"
    assert 0.0 <= j["accuracy"]["accuracy"] <= 1.0 and j["flip_rate"] is not None
