"""Reward models against human votes: HelpSteer3, MT-Bench human judgments (agreement checked
against FastChat's algorithm), Chatbot Arena and PPE, on fixtures written in each dataset's own
schema, with two reward models whose rewards the fixtures spell out (``[a=2 b=0]``: RM ``a``
gives this answer 2, RM ``b`` 0), so every figure is computed by hand."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import scripted_trainer_plugin

from music_core.config import load_config
from music_core.context import RunContext
from music_core.contracts import RewardScorer
from music_core.errors import RecordError
from music_core.evaluation import run_evaluator
from music_core.plugins import temporary_plugin
from music_core.stats import paired_difference

FIX = Path(__file__).parent / "fixtures" / "human"


class MarkerScorer(RewardScorer):
    def __init__(self, key: str):
        self.key = key

    def score(self, conversations):
        return [float(re.search(rf"\b{self.key}=(-?\d+)", c[-1]["content"]).group(1)) for c in conversations]


def MarkerPlugin() -> object:
    return scripted_trainer_plugin("marker-test", MarkerScorer)


def rms(tmp_path: Path) -> dict[str, str]:
    out = {}
    for key in ("a", "b"):
        (tmp_path / key).mkdir(exist_ok=True)
        (tmp_path / key / "music_rm.json").write_text(json.dumps({"trainer": "marker-test"}))
        out[key] = str(tmp_path / key)
    return out


def evaluate(tmp_path, plugins, name: str, *overrides: str) -> dict:
    with temporary_plugin(MarkerPlugin(), "marker"):
        cfg = load_config(None, [f"run.output_dir={tmp_path}", "run.progress=false", *overrides], evaluators=(name,))
        out = run_evaluator(RunContext(cfg, plugins.registry), name, rms(tmp_path))
    return json.loads(Path(out["results_path"]).read_text())


def acc(m: dict, bucket: str | None = None) -> tuple:
    a = m["accuracy"] if bucket is None else m["by_turns"][bucket]
    return (round(a["accuracy"] * a["n"]), a["n"])


def test_helpsteer3_accuracy_by_turns_and_drops(tmp_path, plugins):
    r = evaluate(tmp_path, plugins, "helpsteer3", f"eval.helpsteer3.data={FIX / 'helpsteer3.jsonl'}")
    assert r["rows"] == 8 and r["items"] == 6
    assert r["dropped"] == {"no preference (overall_preference 0)": 2}
    a, b = r["models"]["a"], r["models"]["b"]
    assert acc(a) == (4, 6) and acc(b) == (4, 6)
    # user turns in the context: a string context is one; 1, 2, 3-4 and 5+ are all present
    assert {k: acc(a, k) for k in a["by_turns"]} == {"1": (2, 2), "2": (0, 1), "3-4": (1, 1), "5+": (1, 2)}
    assert {k: acc(b, k) for k in b["by_turns"]} == {"1": (1, 2), "2": (1, 1), "3-4": (1, 1), "5+": (1, 2)}
    assert set(a["by_language"]) == {"english", "chinese"}
    lo, hi = a["accuracy"]["ci95"]
    assert lo <= 4 / 6 <= hi
    paired = r["paired"][0]
    assert (paired["a"], paired["b"], paired["a_only"], paired["b_only"], paired["p_value"]) == ("a", "b", 2, 2, 1.0)
    clear = evaluate(tmp_path, plugins, "helpsteer3", f"eval.helpsteer3.data={FIX / 'helpsteer3.jsonl'}",
                     "eval.helpsteer3.min_abs_preference=2")
    assert clear["items"] == 4 and sum(clear["dropped"].values()) == 4


def test_mt_bench_turns_ties_and_judges(tmp_path, plugins):
    r = evaluate(tmp_path, plugins, "mt-bench-human", f"eval.mt_bench_human.data={FIX / 'mt_bench_human.jsonl'}")
    assert r["dropped"] == {"judge is not human": 2}  # the author's vote and GPT-4's
    assert r["items"] == 7 and r["models"]["a"]["ties"]["votes"] == 2
    assert acc(r["models"]["a"]) == (4, 5) and acc(r["models"]["b"]) == (0, 5)
    assert acc(r["models"]["a"], "1") == (3, 3) and acc(r["models"]["a"], "2") == (1, 2)
    rows = {(x["turn"], x["ties"]): (x["agree"], x["total"]) for x in r["agreement"]["a"]}
    assert rows == {(1, "with ties"): (3, 4), (1, "without ties"): (3, 3), (2, "with ties"): (1, 3),
                    (2, "without ties"): (1, 1)}
    assert {p["judges"] for p in r["published_reference"]} == {"GPT-4 (pair) vs human", "human vs human"}


def fastchat_agreement(votes: list[dict], rm_reward, margin: float) -> dict:
    """FastChat's compute_agreement.py, re-written from its algorithm: votes keyed per turn by
    (question, models in sorted order) with the winner reverted when the order flips; the RM as
    the single-vote judge; `ban` leaves ties out."""
    def revert(v):
        return {"model_a": "model_b", "model_b": "model_a"}.get(v, v)

    def conv(v):
        return "tie" if "tie" in v else v

    def equal(v1, v2):
        return ("tie" in v1 and "tie" in v2) or v1 == v2

    data = [defaultdict(lambda: defaultdict(list)), defaultdict(lambda: defaultdict(list))]
    for vote in votes:
        judge = vote["judge"]
        name = "human" if isinstance(judge, str) and judge.startswith("expert") else None
        cut = 2 * vote["turn"]
        diff = rm_reward(vote["conversation_a"][:cut]) - rm_reward(vote["conversation_b"][:cut])
        rm = "tie" if abs(diff) <= margin else ("model_a" if diff > 0 else "model_b")
        if vote["model_a"] < vote["model_b"]:
            key, winner = (vote["question_id"], vote["model_a"], vote["model_b"]), vote["winner"]
        else:
            key, winner, rm = (vote["question_id"], vote["model_b"], vote["model_a"]), revert(vote["winner"]), revert(rm)
        if name:
            data[vote["turn"] - 1][key]["human"].append(winner)
            if "rm" not in data[vote["turn"] - 1][key]:
                data[vote["turn"] - 1][key]["rm"].append(rm)
    out = {}
    for turn in (1, 2):
        for ban, label in (([], "with ties"), (["tie"], "without ties")):
            agree = total = 0
            for v in data[turn - 1].values():
                if "human" not in v or "rm" not in v or conv(v["rm"][0]) in ban:
                    continue
                for h in v["human"]:
                    if conv(h) in ban:
                        continue
                    total += 1
                    agree += equal(v["rm"][0], h)
            out[(turn, label)] = (agree, total)
    return out


@pytest.mark.parametrize("margin", [0.0, 1.0])
def test_mt_bench_agreement_equals_fastchats_algorithm(tmp_path, plugins, margin):
    votes = [json.loads(line) for line in (FIX / "mt_bench_human.jsonl").open()]
    r = evaluate(tmp_path, plugins, "mt-bench-human", f"eval.mt_bench_human.data={FIX / 'mt_bench_human.jsonl'}",
                 f"eval.mt_bench_human.tie_margin={margin}")
    for key in ("a", "b"):
        def reward(conv, key=key):
            return MarkerScorer(key).score([conv])[0]

        ours = {(x["turn"], x["ties"]): (x["agree"], x["total"]) for x in r["agreement"][key]}
        assert ours == fastchat_agreement(votes, reward, margin), key


def test_arena_every_winner_and_conversation_layout(tmp_path, plugins):
    r = evaluate(tmp_path, plugins, "arena", f"eval.arena.data={FIX / 'arena.jsonl'}")
    assert r["items"] == 6 and r["dropped"] == {}
    a, b = r["models"]["a"], r["models"]["b"]
    assert acc(a) == (2, 3) and acc(b) == (1, 3)  # ties are not errors: 3 decided votes
    assert a["ties"] == {"votes": 3, "rm_also_tie": 1} and b["ties"] == {"votes": 3, "rm_also_tie": 2}
    assert set(a["by_turns"]) == {"1", "2", "3-4"}  # a JSON-string conversation of 2 turns, typed parts of 3
    german = evaluate(tmp_path, plugins, "arena", f"eval.arena.data={FIX / 'arena.jsonl'}", "eval.arena.language=german")
    assert german["items"] == 2 and german["dropped"] == {"language is not german": 4}


def test_ppe_turns_from_conv_metadata(tmp_path, plugins):
    r = evaluate(tmp_path, plugins, "ppe-human", f"eval.ppe_human.data={FIX / 'ppe_human.jsonl'}")
    assert acc(r["models"]["a"]) == (2, 2) and acc(r["models"]["b"]) == (1, 2)
    assert set(r["models"]["a"]["by_turns"]) == {"1", "3-4"} and r["models"]["a"]["ties"]["votes"] == 1


def test_a_file_without_a_required_column_is_refused_naming_it(tmp_path, plugins):
    bad = tmp_path / "bad.jsonl"
    row = json.loads((FIX / "ppe_human.jsonl").read_text().splitlines()[0])
    del row["response_2"]
    bad.write_text(json.dumps(row) + "\n")
    with pytest.raises(RecordError, match=r"bad.jsonl:1: missing required column 'response_2'"):
        evaluate(tmp_path, plugins, "ppe-human", f"eval.ppe_human.data={bad}")


def test_contaminated_items_are_counted_and_excluded(tmp_path, plugins):
    rows = [json.loads(line) for line in (FIX / "helpsteer3.jsonl").open()]
    planted = [rows[4]["context"][-1]["content"], rows[6]["context"][0]["content"]]  # two long prompts
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"chosen": [{"role": "user", "content": f"Before that: {p} Thanks."},
                                                    {"role": "assistant", "content": "ok"}],
                                         "rejected": [{"role": "user", "content": f"Before that: {p} Thanks."},
                                                      {"role": "assistant", "content": "no"}]}) + "\n" for p in planted))
    base = [f"eval.helpsteer3.data={FIX / 'helpsteer3.jsonl'}", f"eval.contamination.data={train}"]
    counted = evaluate(tmp_path, plugins, "helpsteer3", *base)
    assert counted["contamination"]["contaminated"] == 2 and counted["items"] == 6
    gone = evaluate(tmp_path, plugins, "helpsteer3", *base, "eval.contamination.exclude=true")
    assert gone["items"] == 4 and gone["dropped"]["contaminated (eval.contamination.exclude)"] == 2
    assert gone["contamination"]["excluded"] == 2


@pytest.mark.parametrize("k,n", [(3, 40), (7, 20), (12, 30)])
def test_paired_interval_and_p_value_match_a_direct_computation(k, n):
    """A is right on exactly k items where B is wrong, and they agree elsewhere: McNemar's exact
    p is 2 * 0.5^k, and the paired bootstrap of the mean difference (a 0/1 variable with mean
    k/n) has the binomial's percentiles, to within one item."""
    from scipy.stats import binom

    hits_a = [1] * k + [1, 0] * ((n - k) // 2) + [0] * ((n - k) % 2)
    hits_b = [0] * k + [1, 0] * ((n - k) // 2) + [0] * ((n - k) % 2)
    d = paired_difference(hits_a, hits_b, resamples=20000, seed=1)
    assert d["difference"] == pytest.approx(k / n, abs=1e-4)
    assert d["p_value"] == pytest.approx(min(1.0, 2 * 0.5 ** k), abs=1e-6)
    lo, hi = d["ci95"]
    assert lo == pytest.approx(binom.ppf(0.025, n, k / n) / n, abs=1 / n + 1e-9)
    assert hi == pytest.approx(binom.ppf(0.975, n, k / n) / n, abs=1 / n + 1e-9)
    assert d["excludes_zero"] == (lo > 0)


def test_a_hub_dataset_offline_is_skipped_with_its_reason(tmp_path):
    from music_human.evaluator import unavailable

    assert "pass a local path with eval.helpsteer3.data" in unavailable(None, "helpsteer3")
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    assert "not available offline" in unavailable("nvidia/HelpSteer3", "helpsteer3")
    assert unavailable(str(FIX / "helpsteer3.jsonl"), "helpsteer3") is None


def test_cli_evaluates_any_rm_folder_on_a_local_file(tmp_path):
    """`music eval helpsteer3 --rm a=PATH --rm b=PATH eval.helpsteer3.data=FILE` on reward models
    saved by plain transformers (no music files in them)."""
    from test_foreign_rm import plain_rm

    a, b = plain_rm(tmp_path / "rm-a"), plain_rm(tmp_path / "rm-b", trl_layout=True)
    out = subprocess.run([sys.executable, "-m", "music_core", "eval", "helpsteer3", "--rm", f"a={a}", "--rm", f"b={b}",
                          f"eval.helpsteer3.data={FIX / 'helpsteer3.jsonl'}", f"run.output_dir={tmp_path / 'run'}",
                          "run.progress=false"], capture_output=True, text=True, env={**__import__("os").environ,
                                                                                      "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads((tmp_path / "run" / "eval" / "helpsteer3" / "results.json").read_text())
    assert set(r["models"]) == {"a", "b"} and r["items"] == 6 and r["paired"][0]["n"] == 6
    assert "a vs b:" in (tmp_path / "run" / "eval" / "helpsteer3" / "report.md").read_text()


def test_music_run_headlines_the_human_evaluation_and_names_what_it_skipped(tmp_path, plugins, monkeypatch):
    from test_hooks import LengthPlugin

    from music_core.pipeline import run_pipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with temporary_plugin(LengthPlugin(), "length"):
        cfg = load_config(None, [f"run.output_dir={tmp_path}", "run.progress=false", "run.stages=[mix,train,eval]",
                                 "train.trainer=length-test", "eval.evaluators=[helpsteer3,mt-bench-human]",
                                 f"eval.helpsteer3.data={FIX / 'helpsteer3.jsonl'}",
                                 "eval.mt_bench_human.data=lmsys/mt_bench_human_judgments"])
        run_pipeline(RunContext(cfg, plugins.registry))
    report = (tmp_path / "report.md").read_text()
    assert "**Headline**" in report and "helpsteer3: music vs baseline: +0.0 points" in report
    assert "multi-turn human-labelled pairs" in report
    assert "## Evaluations skipped" in report
    assert "`mt-bench-human`: lmsys/mt_bench_human_judgments is not available offline: pass a local path with " \
           "eval.mt_bench_human.data" in report
    results = json.loads((tmp_path / "report.json").read_text())
    assert "mt-bench-human" in results["evaluations"]["skipped"]
