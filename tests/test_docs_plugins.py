"""Plugins written only from docs/hooks.md, installed as distributions, selected by config and
run through the CLI as a user would."""

from __future__ import annotations

import json
import subprocess
import sys

from plugin_helpers import docs_blocks, env_with, install


def music(*args, env, cwd):
    return subprocess.run([sys.executable, "-m", "music_core", *args], capture_output=True, text=True, env=env, cwd=cwd)


def test_trainer_and_evaluator_from_the_docs_train_and_evaluate_through_the_cli(tmp_path):
    trainer, = docs_blocks("register_trainers")
    evaluator, = docs_blocks("register_evaluators")
    site = tmp_path / "site"
    install(site, "docs_trainer", {"__init__.py": trainer})
    install(site, "docs_evaluator", {"__init__.py": evaluator})
    env, out = env_with(site), tmp_path / "run"
    common = [f"run.output_dir={out}", "run.progress=false"]
    listed = music("plugins", "list", "--json", env=env, cwd=tmp_path)
    names = {c["name"]: c for c in json.loads(listed.stdout)["components"]}
    assert names["length"]["distribution"] == "docs-trainer" and names["prefers-polite"]["distribution"] == "docs-evaluator"
    for step in (["mix", *common], ["train", *common, "train.trainer=length"]):
        proc = music(*step, env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
    rm = out / "rm"
    assert json.loads((rm / "music_trainer.json").read_text()) == {"trainer": "length"}
    proc = music("eval", "polite", "--rm", f"length={rm}", *common, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((out / "eval" / "prefers-polite" / "results.json").read_text())
    assert results["length"] is False  # "Get it yourself." is the longer answer: the length RM prefers it
