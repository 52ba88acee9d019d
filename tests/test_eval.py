"""Evaluation: RewardBench's weighting, the judge's position swap, Best-of-N end to end,
pairwise accuracy, and `music run` (dry run, stage markers)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from llm_helpers import KEY
from synth_helpers import scripted_reply, synth_overrides

from music_core import hookimpl
from music_core.config import load_config
from music_core.context import RunContext
from music_core.contracts import Judge, Verdict
from music_core.judging import judge_both_orders
from music_core.plugins import temporary_plugin

FIX = Path(__file__).parent / "fixtures"


# ---- RewardBench --------------------------------------------------------------------------------

def _official():
    """RewardBench's own constants and scoring function, from the installed `rewardbench`
    package, without importing its heavy __init__ (fastchat, vllm...)."""
    spec = importlib.util.find_spec("rewardbench")
    if spec is None:
        pytest.skip("the rewardbench package is not installed (the Makefile installs it with --no-deps)")
    root = Path(next(iter(spec.submodule_search_locations)))
    consts = {}
    exec(compile((root / "constants.py").read_text(), "constants.py", "exec"), consts)
    import ast

    tree = ast.parse((root / "utils.py").read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "calculate_scores_per_section")
    scope: dict = {}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), "utils.py", "exec"), scope)
    return consts["EXAMPLE_COUNTS"], consts["SUBSET_MAPPING"], scope["calculate_scores_per_section"]


def test_rewardbench_sections_equal_rewardbench_own_scoring():
    from music_rewardbench.scoring import EXAMPLE_COUNTS, SECTIONS, section_scores

    counts, mapping, official = _official()
    assert EXAMPLE_COUNTS == counts and SECTIONS == mapping
    rng = random.Random(0)
    for _ in range(20):
        acc = {s: rng.random() for s in counts}
        ours = section_scores(acc)
        theirs = official(counts, mapping, acc)
        for section in mapping:  # rewardbench 0.1.4 returns fractions; we report percent
            assert abs(ours[section] - 100 * theirs[section]) < 1e-9
        assert abs(ours["Overall"] - sum(ours[s] for s in mapping) / 4) < 1e-12


def test_rewardbench_weights_math_prm_like_all_code():
    from music_rewardbench.scoring import section_scores

    acc = {"math-prm": 1.0, **{f"hep-{x}": 0.0 for x in ("cpp", "go", "java", "js", "python", "rust")}}
    assert abs(section_scores(acc)["Reasoning"] - 50.0) < 1e-9


# ---- judging ------------------------------------------------------------------------------------

class AlwaysFirst(Judge):
    name = "always-first-test"

    async def compare(self, first, second, llm, prefix_len=0):
        return Verdict("A", "position bias")


def test_a_judge_that_always_prefers_the_first_yields_ties():
    a = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "x"}]
    b = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "y"}]
    judged = asyncio.run(judge_both_orders(AlwaysFirst(), a, b, None))
    assert judged.outcome == "tie"
    from music_bon.stats import summarize

    assert summarize(["tie"] * 10, 200, 0)["win_rate"] == 0.5


@pytest.mark.parametrize("text,winner", [('{"reasons": "x", "winner": "B"}', "B"), ("Winner: A because", "A"),
                                         ("A", "A"), ('{"winner": "tie"}', "tie"), ("I cannot decide", None)])
def test_verdict_parsing(text, winner):
    from music_bon.judge import parse_verdict

    v = parse_verdict(text)
    assert (v.winner if v else None) == winner


# ---- Best-of-N, pairwise accuracy, RewardBench with a cheap RM -----------------------------------

class LengthPlugin:
    @hookimpl
    def register_trainers(self, register):
        from test_hooks import LengthTrainer

        register(LengthTrainer)


def length_rm(path: Path) -> str:
    path.mkdir(parents=True, exist_ok=True)
    (path / "music_rm.json").write_text(json.dumps({"trainer": "length-test"}))
    return str(path)


def test_best_of_n_end_to_end_with_a_judge_in_both_orders(tmp_path, monkeypatch, plugins):
    from music_openai.testing import openai_server

    monkeypatch.setenv("TEST_KEY", KEY)
    with openai_server(reply=scripted_reply) as srv, temporary_plugin(LengthPlugin(), "length"):
        cfg = load_config(None, synth_overrides(tmp_path, srv.url + "/v1", "openai", "TEST_KEY")
                          + ["eval.bon.turns=2", "eval.bon.n=[1,2,4]", "eval.bon.bootstrap=100"])
        ctx = RunContext(cfg, plugins.registry)
        from music_core.evaluation import run_evaluator

        rms = {"long": length_rm(tmp_path / "rm-a"), "also": length_rm(tmp_path / "rm-b")}
        out = run_evaluator(ctx, "best-of-n", rms)
    res = json.loads(Path(out["results_path"]).read_text())
    rows = {(r["comparison"], r["n"]): r for r in res["rows"]}
    assert set(rows) == {(f"{rm} BoN vs N=1", n) for rm in ("long", "also") for n in (2, 4)} | {("also vs long", 2), ("also vs long", 4)}
    # picking the longest candidate beats a single sample under a judge that prefers length
    assert rows[("long BoN vs N=1", 4)]["win_rate"] > 0.5
    # two RMs that agree pick the same candidates: identical conversations, ties without a judge call
    assert rows[("also vs long", 2)]["ties"] == rows[("also vs long", 2)]["prompts"]
    dialogues = [json.loads(x) for x in open(res["dialogues_path"])]
    first = {(d["prompt_id"], d["rm"], d["n"]): d for d in dialogues}
    pid = dialogues[0]["prompt_id"]
    # fairness: N=2 saw the first two of N=4's candidates (the cache keys samples by index)
    assert first[(pid, "long", 4)]["picks"][0]["scores"][:2] == first[(pid, "long", 2)]["picks"][0]["scores"]
    assert Path(out["figures"][0]).exists() and out["figures"][0].endswith(".png")
    assert "win rate" in Path(out["markdown_path"]).read_text()


def test_rewardbench_and_pairwise_accuracy_evaluators(tmp_path, plugins):
    from music_core.evaluation import run_evaluator

    with temporary_plugin(LengthPlugin(), "length"):
        ctx = RunContext(load_config(None, [f"run.output_dir={tmp_path}", "eval.rewardbench.path=builtin",
                                            f"eval.pairwise.data={FIX / 'skywork.jsonl'}"]), plugins.registry)
        rm = {"len": length_rm(tmp_path / "rm")}
        rb = json.loads(Path(run_evaluator(ctx, "rewardbench", rm)["results_path"]).read_text())
        pw = json.loads(Path(run_evaluator(ctx, "pairwise-accuracy", rm)["results_path"]).read_text())
    sections = rb["models"]["len"]["sections"]
    assert set(sections) == {"Chat", "Chat Hard", "Safety", "Reasoning", "Overall"}
    assert len(rb["models"]["len"]["subset_accuracy"]) == 23
    m = pw["models"]["len"]
    assert m["accuracy"] == 0.5  # "12" is longer than "7"; "Seven." is longer than "Blue."
    assert set(m["source"]) == {"math-fixture", "chat-fixture"} and set(m["first_divergent_turn"]) == {"1", "2"}


# ---- music run ----------------------------------------------------------------------------------

def test_paper_dry_run_prints_the_plan_and_calls_nothing(tmp_path):
    out = subprocess.run([sys.executable, "-m", "music_core", "run", "--config", "configs/paper.yaml", "--dry-run",
                          f"run.output_dir={tmp_path / 'paper'}"], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    for needle in ("gemini:gemini-2.5-flash", "anthropic:claude-sonnet-4-5", "audit:", "T=5", "gemma-2-9b-it", "2500 steps", "batch 64", "H=3",
                   "N in [1, 2, 4, 8]", "user_simulator", "assistant_simulator", "policy", "judge", "estimated cost"):
        assert needle in out.stdout, needle
    assert not (tmp_path / "paper").exists()


def test_run_pipeline_stages_markers_and_resume(tmp_path, monkeypatch, plugins):
    from music_openai.testing import openai_server

    from music_core.pipeline import run_pipeline

    monkeypatch.setenv("TEST_KEY", KEY)
    with openai_server(reply=scripted_reply) as srv, temporary_plugin(LengthPlugin(), "length"):
        base = synth_overrides(tmp_path, srv.url + "/v1", "openai", "TEST_KEY") + [
            "seeds.limit=4", "synth.turns=2", "train.trainer=length-test", "eval.bon.turns=1", "eval.bon.n=[1,2]",
            "eval.bon.bootstrap=50", "eval.bon.prompt_sets.builtin.limit=3"]
        run_pipeline(RunContext(load_config(None, base), plugins.registry))
        report = (tmp_path / "report.md").read_text()
        assert "## Multi-turn Best-of-N" in report and "## RewardBench" in report and "## Pairwise accuracy" in report
        # the audit stage ran between synth and mix, and its validity stands beside the reward models
        assert "## Pair audit" in report and "The MUSIC RM's synthetic pairs: audited validity" in report
        assert report.index("## Pair audit") < report.index("## Reward models")
        calls = len(srv.requests)
        marks = {p.stem: json.loads(p.read_text())["hash"] for p in (tmp_path / "stages").glob("*.json")}
        run_pipeline(RunContext(load_config(None, base), plugins.registry))  # everything is done: nothing runs
        assert len(srv.requests) == calls
        run_pipeline(RunContext(load_config(None, base + ["eval.bon.n=[1,2,4]"]), plugins.registry))
        after = {p.stem: json.loads(p.read_text())["hash"] for p in (tmp_path / "stages").glob("*.json")}
        assert after["synth"] == marks["synth"] and after["train-music"] == marks["train-music"]
        assert after["audit"] == marks["audit"]
        assert after["eval-best-of-n"] != marks["eval-best-of-n"]


@pytest.mark.slow
def test_offline_music_run_end_to_end_with_real_models(tmp_path):
    """`music run` with no keys and no network, shrunk: SmolLM2 simulators, judge and policy,
    MiniLM reward models, every stage, the report, the heatmap and the tables."""
    out = tmp_path / "run"
    args = [sys.executable, "-m", "music_core", "run", f"run.output_dir={out}", "run.progress=false",
            "seeds.limit=3", "synth.turns=2", "train.epochs=1", "eval.bon.turns=1", "eval.bon.n=[1,2]",
            "eval.bon.prompt_sets.builtin.limit=2", "eval.bon.bootstrap=100", "audit.calibration_pairs=4"]
    env = {k: v for k, v in __import__("os").environ.items() if "API_KEY" not in k}
    proc = subprocess.run(args, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (out / "report.md").read_text()
    for section in ("## Synthesis", "## Pair audit", "## Reward models", "## Multi-turn Best-of-N", "## Pairwise accuracy",
                    "## RewardBench"):
        assert section in report
    # the reward-model table and line come from the training stage's record of the trainer's summary
    assert "| RM | train pairs | steps | final train loss | held-out accuracy |" in report
    assert "trainer `bradley-terry`: `cls` head on `minilm`" in report
    assert (out / "eval" / "best-of-n" / "winrate_heatmap.png").stat().st_size > 1000
    # the heatmap link resolves from the run report and from the evaluator's own report
    assert "![win rates](eval/best-of-n/winrate_heatmap.png)" in report
    assert "![win rates](winrate_heatmap.png)" in (out / "eval" / "best-of-n" / "report.md").read_text()
    results = json.loads((out / "report.json").read_text())
    assert set(results["reward_models"]) == {"baseline", "music"}
    assert results["evaluations"]["rewardbench"]["models"]["music"]["sections"]["Overall"] >= 0
    assert "report:" in proc.stdout
    # depth by default: the held-out pairs' chosen sides, rule-based defects; both RMs' curves with
    # intervals, the plot, and the headline's music vs baseline at d >= 1 with its paired interval
    depth = results["evaluations"]["depth"]
    assert depth["built"]["held_out"] and depth["built"]["from"] == str(out / "mix" / "eval.jsonl")
    assert set(depth["models"]) == {"baseline", "music"} and {0, 1} <= set(depth["depths"])
    assert all(len(m["d>=1"]["ci95"]) == 2 for m in depth["models"].values())
    assert "## Where can the reward model see a defect? (depth)" in report
    curve = report[report.index("## Where can the reward model see a defect? (depth)"):]
    assert "| reward model | d = 0 | d = 1 | " in curve
    assert all(re.search(rf"\| {rm} \| [01]\.\d{{3}} \[[01]\.\d\d, [01]\.\d\d\] \(n=\d+\) \|", curve)
               for rm in ("music", "baseline"))
    assert "![accuracy by depth](eval/depth/depth_curve.png)" in report
    assert (out / "eval" / "depth" / "depth_curve.png").stat().st_size > 1000
    headline = report[report.index("**Headline**"):report.index("\n## ", report.index("**Headline**"))]
    assert "- depth: at d>=1 (music " in headline and "music vs baseline: " in headline and " points [" in headline
    # a rerun makes no call: every step is done with the same inputs
    markers = {p.name: p.stat().st_mtime_ns for p in (out / "stages").glob("*.json")}
    again = subprocess.run(args, capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "[eval-depth] done earlier with the same inputs" in again.stderr and "] running" not in again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (out / "stages").glob("*.json")} == markers
