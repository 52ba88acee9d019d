"""Plugins written only from docs/hooks.md, installed as distributions, selected by config and
run through the CLI as a user would."""

from __future__ import annotations

import json
import subprocess
import sys

from plugin_helpers import docs_blocks, env_with, install


def music(*args, env, cwd):
    return subprocess.run([sys.executable, "-m", "music_core", *args], capture_output=True, text=True, env=env, cwd=cwd)


def install_docs_plugins(tmp_path):
    """The trainer and the evaluator of docs/hooks.md, verbatim, installed as two distributions."""
    trainer, = docs_blocks("register_trainers")
    evaluator, = docs_blocks("register_evaluators")
    site = tmp_path / "site"
    install(site, "docs_trainer", {"__init__.py": trainer})
    install(site, "docs_evaluator", {"__init__.py": evaluator})
    return env_with(site)


def test_trainer_and_evaluator_from_the_docs_train_and_evaluate_through_the_cli(tmp_path):
    env, out = install_docs_plugins(tmp_path), tmp_path / "run"
    common = [f"run.output_dir={out}", "run.progress=false"]
    listed = music("plugins", "list", "--json", env=env, cwd=tmp_path)
    names = {c["name"]: c for c in json.loads(listed.stdout)["components"]}
    assert names["length"]["distribution"] == "docs-trainer" and names["prefers-polite"]["distribution"] == "docs-evaluator"
    for step in (["mix", *common], ["train", *common, "train.trainer=length", "train.per_char=-1"]):
        proc = music(*step, env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
    rm = out / "rm"
    assert json.loads((rm / "music_trainer.json").read_text()) == {"trainer": "length", "description": "", "summary": {}}
    proc = music("eval", "polite", "--rm", f"length={rm}", *common, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((out / "eval" / "prefers-polite" / "results.json").read_text())
    # the trainer's own option reached it: per_char -1 makes the shorter answer ("Here you go!") win
    assert json.loads((rm / "length.json").read_text()) == {"per_char": -1.0}
    assert results["length"] is True


def test_a_trainers_options_exist_only_when_it_is_selected(tmp_path):
    trainer, = docs_blocks("register_trainers")
    site = tmp_path / "site"
    install(site, "docs_trainer", {"__init__.py": trainer})
    env = env_with(site)

    def keys(*args, extra_env=None):
        proc = music("config", "show", "--help-keys", *args, env={**env, **(extra_env or {})}, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return {line.split(" ")[0] for line in proc.stdout.splitlines() if line and not line.startswith(" ")}

    selected, default = keys("train.trainer=length"), keys()
    assert "train.per_char" in selected and "train.lr" not in selected and "train.packing" not in selected
    assert "train.per_char" not in default and {"train.lr", "train.packing", "train.lora.quantize_4bit"} <= default
    bad = music("config", "show", "train.trainer=length", "train.per_char=lots", env=env, cwd=tmp_path)
    assert bad.returncode != 0 and "train.per_char" in bad.stderr
    typo = music("config", "show", "train.trainer=length", "train.lr=0.1", env=env, cwd=tmp_path)
    assert typo.returncode != 0 and "train.lr" in typo.stderr  # another trainer's key is unknown here
    # with the Bradley-Terry plugin blocked, none of its keys exists anywhere
    blocked = keys(extra_env={"MUSIC_BLOCK_PLUGINS": "music_bt"})
    assert not {k for k in blocked if k.startswith("train.")} - {"train.trainer", "train.train_data", "train.eval_data",
                                                                  "train.output_dir"}


def test_an_evaluators_options_exist_when_selected_and_music_run_uses_both_plugins(tmp_path):
    env, out = install_docs_plugins(tmp_path), tmp_path / "run"

    def show(*args):
        proc = music("config", "show", *args, env=env, cwd=tmp_path)
        return proc.returncode, proc.stdout + proc.stderr

    rc, text = show()
    assert rc == 0 and "polite:" not in text  # installed, not selected
    rc, text = show("eval.evaluators=[prefers-polite]")
    assert rc == 0 and "min_gap: 0.0" in text and "bon:" not in text  # only what the selection reads
    rc, text = show("eval.evaluators=[prefers-polite]", "eval.polite.min_gap=lots")
    assert rc != 0 and "eval.polite.min_gap" in text
    proc = music("run", f"run.output_dir={out}", "run.progress=false", "run.stages=[mix,train,eval]",
                 "train.trainer=length", "train.per_char=-1", "eval.evaluators=[prefers-polite]",
                 "eval.polite.rude=No.", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((out / "eval" / "prefers-polite" / "results.json").read_text())
    # per_char -1: shorter wins; the configured rude answer "No." is shorter than "Here you go!"
    assert results["baseline"] is False and results["music"] is False
    # `music eval polite` runs it with its options even when eval.evaluators does not list it
    proc = music("eval", "polite", "--rm", f"x={out / 'rm' / 'music'}", f"run.output_dir={out}", "run.progress=false",
                 "eval.polite.rude=a very long and rude answer indeed", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((out / "eval" / "prefers-polite" / "results.json").read_text())["x"] is True


def test_the_docs_evaluator_appears_in_a_music_sweep_table_with_its_headline_metric(tmp_path):
    """The sweep's comparison knows no evaluator by name: the docs' evaluator names its own
    column through ``Evaluator.headline``."""
    env = install_docs_plugins(tmp_path)
    proc = music("sweep", f"sweep.output_dir={tmp_path / 'sw'}", "run.progress=false", "run.stages=[mix,train,eval]",
                 "train.trainer=length", "train.per_char=-1", "eval.evaluators=[prefers-polite]",
                 "eval.polite.rude=No.,Absolutely-not-and-never-again", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "sw" / "report.json").read_text())
    assert "prefers polite" in report["metrics"]
    # per_char -1: the shorter answer wins, so "No." beats "Here you go!" and the long refusal does not
    values = {r["overrides"]["eval.polite.rude"]: r["metrics"]["prefers polite"]["value"] for r in report["variants"]}
    assert values == {"No.": 0.0, "Absolutely-not-and-never-again": 1.0}
    md = (tmp_path / "sw" / "report.md").read_text()
    assert "| prefers polite |" in md and "| 1.000 |" in md
    assert (tmp_path / "sw" / "plots" / "politeness.png").stat().st_size > 1000


def test_a_components_declared_options_are_checked_when_the_config_loads(tmp_path):
    """The docs' contrast strategy, installed as a distribution: its options_class is enforced at
    load (unknown option, wrong type, its own __post_init__ rule), each naming the key, before
    any stage runs; good options pass."""
    strategy, = docs_blocks("register_contrast_strategies")
    site = tmp_path / "site"
    install(site, "docs_strategy", {"__init__.py": strategy})
    env = env_with(site)
    sel = ["synth.strategy=shouting", "synth.fallback_strategy=null"]
    for bad, named in (("synth.strategy_options.loudness=3", "synth.strategy_options.loudness"),
                       ("synth.strategy_options.volume=lots", "synth.strategy_options"),
                       ("synth.strategy_options.volume=9", "synth.strategy_options.volume': must be between 0 and 5")):
        for cmd in (["config", "show"], ["run", "--dry-run"]):
            proc = music(*cmd, *sel, bad, env=env, cwd=tmp_path)
            assert proc.returncode != 0 and named in proc.stderr, (cmd, bad, proc.stderr[-500:])
    ok = music("config", "show", *sel, "synth.strategy_options.volume=3", env=env, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-1000:]
    listed = music("config", "show", "--help-keys", *sel, "synth.strategy_options.volume=3", env=env, cwd=tmp_path)
    assert "synth.strategy_options.volume (int) = 3" in listed.stdout  # the selected component's options
    assert "synth.strategy_options.volume" not in music("config", "show", "--help-keys", env=env, cwd=tmp_path).stdout
    # a bundled component's rule moved to load time too: the judge's verdict
    proc = music("config", "show", "eval.bon.judge_options.verdict=maybe", env=env, cwd=tmp_path)
    assert proc.returncode != 0 and "eval.bon.judge_options.verdict" in proc.stderr


def test_hook_register_model_aliases(tmp_path):
    """The docs' alias, installed as a distribution: listed with its distribution, and
    `train.backbone=team-backbone` trains the folder it resolves to."""
    from bt_helpers import tiny_decoder, write_pairs

    alias, = docs_blocks("register_model_aliases")
    site = tmp_path / "site"
    install(site, "docs_alias", {"__init__.py": alias})
    env = {**env_with(site), "TEAM_BACKBONE": str(tiny_decoder(tmp_path / "dec"))}
    listed = json.loads(music("plugins", "list", "--json", env=env, cwd=tmp_path).stdout)["components"]
    names = {c["name"]: c for c in listed}
    assert names["team-backbone"]["kind"] == "model_alias" and names["team-backbone"]["distribution"] == "docs-alias"
    assert names["minilm"]["kind"] == "model_alias"  # the bundled ones come through the same hook
    data = write_pairs(tmp_path / "d.jsonl")
    proc = music("train", f"run.output_dir={tmp_path / 'run'}", "run.progress=false", f"train.train_data={data}",
                 "train.backbone=team-backbone", "train.head=last-token", "train.precision=fp32", "train.max_steps=2",
                 env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "rm" / "metrics.json").read_text())
    assert metrics["backbone"] == "team-backbone" and metrics["steps"] == 2


def test_every_synthesis_hook_from_the_docs_as_installed_distributions_through_the_cli(tmp_path):
    """The provider, simulator, strategy, seed source, pair filter, judge and command of
    docs/hooks.md, verbatim, each installed as its own distribution, selected by config and run
    through the CLI: synthesis with all of them, the judge in Best-of-N, the command."""
    site = tmp_path / "site"
    hooks = ["register_chat_providers", "register_simulators", "register_contrast_strategies",
             "register_seed_sources", "register_pair_filters", "register_judges", "register_commands",
             "register_trainers"]
    for hook in hooks:
        block, = docs_blocks(hook)
        install(site, f"docs_{hook.removeprefix('register_')}", {"__init__.py": block})
    env, out = env_with(site), tmp_path / "run"
    listed = json.loads(music("plugins", "list", "--json", env=env, cwd=tmp_path).stdout)
    dist = {c["name"]: c["distribution"] for c in listed["components"]}
    assert {dist[n] for n in ("echo", "terse", "shouting", "one-liner", "min-turns", "longer-wins", "length")} == {
        f"docs-{h.removeprefix('register_').replace('_', '-')}" for h in hooks if h != "register_commands"}
    common = [f"run.output_dir={out}", "run.progress=false", "models.e.provider=echo", "models.e.model=x",
              "roles.user_simulator=e", "roles.assistant_simulator=e", "roles.policy=e", "roles.judge=e"]
    proc = music("synth", *common, "seeds.source=one-liner", "synth.user_simulator=terse", "synth.strategy=shouting",
                 "synth.strategy_options.volume=2", "synth.filter=min-turns", "synth.turns=2", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    pairs = [json.loads(line) for line in open(out / "synth" / "pairs.jsonl")]
    assert len(pairs) == 2 and all(p["meta"]["strategy"] == "shouting" for p in pairs)
    assert all(m["content"].startswith("echo ") for p in pairs for m in p["chosen"][-1:])
    wrong = music("synth", *common, "models.e.options.prefx=hi", env=env, cwd=tmp_path)  # the provider's options_class
    assert wrong.returncode == 2 and "models.e.options.prefx" in wrong.stderr and "prefix" in wrong.stderr
    assert all(t["modified"].endswith("!!") and t["modified"][:-2].isupper() for p in pairs for t in p["meta"]["turns"])
    assert {p["meta"]["seed_source"] for p in pairs} == {"one-liner"}
    counted = music("count", str(out / "synth" / "pairs.jsonl"), env=env, cwd=tmp_path)
    assert counted.returncode == 0 and counted.stdout.strip() == "2"
    for step in (["mix", *common], ["train", *common, "train.trainer=length"]):
        proc = music(*step, env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
    proc = music("eval", "bon", "--rm", f"length={out / 'rm'}", *common, "eval.bon.judge=longer-wins",
                 "eval.bon.n=[1,2]", "eval.bon.turns=1", "eval.bon.prompt_sets={}",
                 "eval.bon.prompt_sets.mine.source=one-liner", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    judge = json.loads((out / "eval" / "best-of-n" / "results.json").read_text())["judge"]
    # the docs' echo policy gives candidates of one length, so the length RM picks the N=1 answer
    # and the comparisons are of identical conversations (skipped); the judge's verdicts are
    # exercised in tests/test_hooks.py
    assert judge["name"] == "longer-wins" and judge["comparisons"] == 2


def serving(args: list[str], env: dict, cwd, ready: str):
    """Start a `music` server on a free port; return (process, port) once GET `ready` answers."""
    import socket
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "music_core", *args, "--port", str(port)], env=env, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{ready}", timeout=2)
            return proc, port
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read().decode()[-3000:]) from None
            time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"music {args[0]} did not start")


def test_music_serve_and_inspect_use_a_third_party_trainers_packed_scorer(tmp_path):
    """The docs' length trainer implements the packed-scorer protocol: `music serve` batches its
    score_ids and reports its truncation, `music inspect --rm` shows its rewards; neither knows
    which trainer made the folder."""
    import time
    import urllib.request

    env = install_docs_plugins(tmp_path)
    rm = tmp_path / "length-rm"
    rm.mkdir()
    (rm / "length.json").write_text(json.dumps({"per_char": 1.0}))
    (rm / "music_trainer.json").write_text(json.dumps({"trainer": "length"}))
    convs = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
             [{"role": "user", "content": "q"}, {"role": "assistant", "content": "x" * 5000}]]
    proc, port = serving(["serve", "--rm", f"length={rm}"], env, tmp_path, "/health")
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/rewards", data=json.dumps({"conversations": convs}).encode(),
                                     headers={"content-type": "application/json"})
        answer = json.loads(urllib.request.urlopen(req, timeout=60).read())
        assert answer["rewards"] == [5.0, 4096.0] and answer["truncated"] == [False, True]
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert 'music_serve_truncated_total{model="length"} 1' in metrics
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"id": "p0", "chosen": convs[1], "rejected": [convs[1][0], convs[0][1]]}) + "\n")
    proc, port = serving(["inspect", "--pairs", str(pairs), "--rm", f"length={rm}"], env, tmp_path, "/api/meta")
    try:
        deadline = time.time() + 60
        while not (meta := json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/meta").read()))["ready"]:
            assert time.time() < deadline
            time.sleep(0.2)
        assert meta["rms"] == ["length"]
        shown = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/pair/0", timeout=30).read())
        assert shown["scores"]["length"]["chosen"] == 4096.0 and shown["scores"]["length"]["rejected"] == 5.0
    finally:
        proc.terminate()
        proc.wait(timeout=60)
