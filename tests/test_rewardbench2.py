"""RewardBench 2 (issue 11): subset and overall scores equal ``rewardbench`` 0.1.4's own v2 code
on the same per-completion scores, ties included; the evaluator runs on the built-in smoke set."""

from __future__ import annotations

import ast
import importlib.util
import json
import random
from pathlib import Path

import pytest


def _official_v2():
    """``reroll_and_score_dataset`` and ``process_single_model`` from the installed package's
    utils.py, without importing its heavy __init__."""
    spec = importlib.util.find_spec("rewardbench")
    if spec is None:
        pytest.skip("the rewardbench package is not installed (the Makefile installs it with --no-deps)")
    root = Path(next(iter(spec.submodule_search_locations)))
    tree = ast.parse((root / "utils.py").read_text())
    wanted = {"reroll_and_score_dataset", "sample_stats", "process_single_model"}
    fns = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in wanted]
    import math

    import numpy as np
    import pandas as pd
    from datasets import Dataset

    scope: dict = {"np": np, "math": math, "pd": pd, "Dataset": Dataset}
    exec(compile(ast.Module(body=fns, type_ignores=[]), "utils.py", "exec"), scope)
    return scope["reroll_and_score_dataset"], scope["process_single_model"]


def _examples(rng: random.Random) -> list[dict]:
    out = []
    for subset in ("Factuality", "Precise IF", "Math", "Safety", "Focus"):
        for _ in range(6):
            out.append({"id": str(len(out)), "subset": subset, "num_correct": 1, "chosen": ["c"], "rejected": ["r"] * 3})
    for pid in range(8):
        k = rng.randint(2, 4)
        out.append({"id": f"ref:{pid}", "subset": "Ties", "num_correct": 1, "chosen": ["c"], "rejected": ["r"] * 3})
        out.append({"id": f"tied:{pid}", "subset": "Ties", "num_correct": k, "chosen": ["c"] * k, "rejected": ["r"] * 3})
    return out


def _scores(examples, rng):
    # coarse values so that ties (equal scores) happen often
    return [[float(rng.randint(0, 4)) for _ in range(len(e["chosen"]) + len(e["rejected"]))] for e in examples]


def test_subset_and_overall_scores_equal_rewardbench_v2():
    from datasets import Dataset
    from music_rewardbench.scoring_v2 import subset_scores

    reroll, process_single_model = _official_v2()
    rng = random.Random(0)
    for _ in range(10):
        examples = _examples(rng)
        scores = _scores(examples, rng)
        ours = subset_scores(examples, scores)
        # RewardBench 2's own path: one row per completion, rerolled, Ties scored apart
        rows = {"text": [], "scores": [], "subset": [], "id": []}
        for e, sc in zip(examples, scores):
            for s in sc:
                rows["text"].append("t")
                rows["scores"].append(s)
                rows["subset"].append(e["subset"])
                rows["id"].append(e["id"])
        rolled = reroll(Dataset.from_dict(rows), [len(s) for s in scores], cols_to_combine=["text", "scores"])
        rolled = rolled.add_column("num_correct", [e["num_correct"] for e in examples])
        for subset in {e["subset"] for e in examples}:
            part = rolled.filter(lambda ex, s=subset: ex["subset"] == s)
            if subset == "Ties":
                _, theirs = process_single_model(part)
            else:
                theirs = sum(part["results"]) / len(part["results"])
            assert abs(ours[subset] - theirs) < 1e-9, subset
        assert abs(ours["Overall"] - sum(ours[s] for s in ours if s != "Overall") / 6) < 1e-12


def test_ties_are_credited_one_over_k():
    from music_rewardbench.scoring_v2 import example_result

    assert example_result([2.0, 1.0, 0.0, 1.0]) == 1.0
    assert example_result([2.0, 2.0, 0.0, 1.0]) == 0.5
    assert example_result([1.0, 2.0, 0.0, 1.0]) == 0.0


def test_rewardbench2_evaluator_on_the_builtin_smoke_set(tmp_path, plugins):
    from test_eval import LengthPlugin, length_rm

    from music_core.config import load_config
    from music_core.context import RunContext
    from music_core.evaluation import run_evaluator
    from music_core.plugins import temporary_plugin

    with temporary_plugin(LengthPlugin(), "length"):
        ctx = RunContext(load_config(None, [f"run.output_dir={tmp_path}"]), plugins.registry)
        out = run_evaluator(ctx, "rewardbench-2", {"len": length_rm(tmp_path / "rm")})
    res = json.loads(Path(out["results_path"]).read_text())
    subsets = res["models"]["len"]["subsets"]
    assert set(subsets) == {"Factuality", "Precise IF", "Math", "Safety", "Focus", "Ties", "Overall"}
    assert res["examples"] == 14 and "smoke set" in res["note"]
    assert "RewardBench 2" in Path(out["markdown_path"]).read_text()


def test_a_snapshot_folder_reads_only_the_configured_split(tmp_path):
    """A local copy of a hub dataset keeps splits side by side; only the asked one is read."""
    import pandas as pd
    from music_rewardbench.rewardbench import load_examples

    from music_core.errors import RecordError

    data = tmp_path / "reward-bench" / "data"
    data.mkdir(parents=True)
    row = {"prompt": "p", "chosen": "c", "rejected": "r", "subset": "alpacaeval-easy", "id": 0}
    pd.DataFrame([row] * 16).to_parquet(data / "filtered-00000-of-00001.parquet")
    pd.DataFrame([row] * 24).to_parquet(data / "raw-00000-of-00001.parquet")
    assert len(load_examples(str(tmp_path / "reward-bench"), "filtered")) == 16
    assert len(load_examples(str(tmp_path / "reward-bench"), "raw")) == 24
    with pytest.raises(RecordError, match="no files of split 'test'"):
        load_examples(str(tmp_path / "reward-bench"), "test")
