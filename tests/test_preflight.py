"""The preflight of `music run`: before its first call it checks what the later stages need (the
memory plan, data paths and columns, key variables, component names) and refuses with one list
of every problem, each naming its config key; run.preflight=false skips it."""

from __future__ import annotations

from pathlib import Path

import pytest

from music_core.cli import main
from music_core.errors import MusicError, PreflightError
from music_core.testing.loopback import LoopbackServer, Response

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures"


def music_run(*args: str) -> int:
    """``music run ARGS`` in this process; its exit status."""
    try:
        main(["run", *args])
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def test_paper_config_on_one_80gb_gpu_is_refused_before_any_request(tmp_path, monkeypatch, capsys):
    """The issue's case: with every key set and every endpoint on a loopback server, `music run`
    with paper.yaml on one 80 GB GPU stops before its first call, naming the memory plan and the
    settings that would fit; the server sees no request and nothing is written."""
    for var in ("GEMINI_API_KEY", "ANTHROPIC_API_KEY", "VLLM_API_KEY"):
        monkeypatch.setenv(var, "dummy-key")
    with LoopbackServer(lambda req: Response(200, {})) as srv:
        out = tmp_path / "paper"
        code = music_run(
            "--config", str(ROOT / "configs/paper.yaml"), "train.gpus=1", "train.gpu_memory_gib=80",
            f"run.output_dir={out}", "run.progress=false",
            *(f"models.{name}.base_url={srv.url}/v1" for name in ("gemini_sim", "gemini_judge", "auditor", "policy")),
            # the hub datasets as local files of the same schemas: the data checks pass
            f"seeds.path={FIX / 'skywork.jsonl'}", f"mix.original.path={FIX / 'skywork.jsonl'}",
            f"eval.bon.prompt_sets.anthropic-hh.path={FIX / 'hh.jsonl'}",
            f"eval.bon.prompt_sets.ultrainteract.path={FIX / 'ultrainteract_sft.jsonl'}",
            "eval.rewardbench.path=builtin", "eval.rewardbench2.path=builtin")
        assert len(srv.requests) == 0
    err = capsys.readouterr().err
    assert code == PreflightError.exit_code == 7, err
    assert "stopped before its first call" in err and "run.preflight=false" in err
    memory = next(line for line in err.splitlines() if line.startswith("  - train: the memory plan does not fit"))
    assert "155.3 GiB per GPU" in memory and "1 GPU(s) of 80 GiB" in memory
    assert "train.param_dtype=bf16 train.optimizer=adamw_8bit" in memory  # the first settings that fit
    for key in ("seeds.path", "mix.original.path", "eval.bon.", "eval.rewardbench", "api_key_env"):
        assert f"  - {key}" not in err, key  # fixtures with the right columns; keys set
    assert not out.exists()

    # the same settings on a GPU that holds them: no memory problem
    from music_bt.trainer import BradleyTerryTrainer

    from music_core.config import load_config

    cfg = load_config(ROOT / "configs/paper.yaml", ["train.gpus=1", "train.gpu_memory_gib=200"])
    assert not [p for p in BradleyTerryTrainer.preflight(cfg.train) if p.key == "train"]


def test_every_problem_is_listed_at_once_each_naming_its_key(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MUSIC_PREFLIGHT_TEST_KEY", raising=False)
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text('{"messages": [{"role": "user", "content": "Hi"}]}\n')  # no chosen/rejected: not Skywork
    code = music_run(
        f"run.output_dir={tmp_path / 'run'}", "run.progress=false", "run.stages=[synth,eval]",
        "models.sim.provider=openai", "models.sim.model=m", "models.sim.base_url=http://127.0.0.1:9/v1",
        "models.sim.api_key_env=MUSIC_PREFLIGHT_TEST_KEY", "roles.user_simulator=sim",
        "roles.assistant_simulator=sim", "roles.policy=sim", "roles.judge=sim",
        "seeds.source=skywork", f"seeds.path={seeds}", "synth.strategy=no-such-strategy",
        "eval.evaluators=[best-of-n,rewardbench,helpsteer3]", f"eval.rewardbench.path={tmp_path / 'rb.jsonl'}",
        f"eval.helpsteer3.data={tmp_path / 'hs3' / 'validation.parquet'}")
    err = capsys.readouterr().err
    assert code == 7, err
    problems = [line.removeprefix("  - ") for line in err.splitlines() if line.startswith("  - ")]
    keys = [p.split(":", 1)[0] for p in problems]
    assert keys == ["synth.strategy", "seeds.path", "eval.rewardbench.path", "eval.helpsteer3.data",
                    "models.sim.api_key_env"], problems
    assert "no contrast strategy named 'no-such-strategy'" in problems[0]
    assert f"{seeds}:1: missing columns 'chosen', 'rejected'" in problems[1]
    assert "not found" in problems[2] and "not found" in problems[3]
    assert "MUSIC_PREFLIGHT_TEST_KEY is not set" in problems[4]
    assert "user_simulator, assistant_simulator, contrast, policy" in problems[4]  # one line per endpoint


def test_a_hub_dataset_not_cached_offline_is_named(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = music_run(f"run.output_dir={tmp_path}", "run.progress=false", "run.stages=[mix]",
                     "mix.original.source=skywork", "mix.original.path=no-such-owner/no-such-preference-set")
    err = capsys.readouterr().err
    assert code == 7
    assert "  - mix.original.path: hub dataset 'no-such-owner/no-such-preference-set' is not in the local cache" in err


def test_run_preflight_false_skips_the_check(tmp_path, plugins):
    from music_core.config import load_config
    from music_core.context import RunContext
    from music_core.pipeline import run_pipeline

    missing = tmp_path / "original.jsonl"
    base = [f"run.output_dir={tmp_path}", "run.progress=false", "run.stages=[mix]", "mix.original.source=jsonl",
            f"mix.original.path={missing}"]
    with pytest.raises(PreflightError) as refused:
        run_pipeline(RunContext(load_config(None, base), plugins.registry))
    assert [p.key for p in refused.value.problems] == ["mix.original.path"]
    with pytest.raises(MusicError) as failed:  # no check: the mix stage itself meets the missing file
        run_pipeline(RunContext(load_config(None, [*base, "run.preflight=false"]), plugins.registry))
    assert not isinstance(failed.value, PreflightError) and str(missing) in str(failed.value)


def test_the_dry_run_prints_what_the_preflight_would_refuse(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MUSIC_PREFLIGHT_TEST_KEY", raising=False)
    code = music_run("--dry-run", f"run.output_dir={tmp_path / 'run'}", "models.local.provider=openai",
                     "models.local.api_key_env=MUSIC_PREFLIGHT_TEST_KEY", "models.local.base_url=http://127.0.0.1:9/v1")
    out = capsys.readouterr().out
    assert code == 0
    assert "preflight (before its first call; run.preflight=false skips): music run would refuse" in out
    assert "- models.local.api_key_env: openai: environment variable MUSIC_PREFLIGHT_TEST_KEY is not set" in out
