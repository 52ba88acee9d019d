"""The store of finished steps (music_core.steps) and the folder each stage owns: a sweep links
exactly the folder the stage writes, and a folder moved out of the run by its own key is not
shared."""

from __future__ import annotations

import json

from music_core.config import load_config
from music_core.context import RunContext
from music_core.stages import STAGES, stage_hashes
from music_core.steps import shared_step


def _ctx(tmp_path, *overrides):
    return RunContext(load_config(None, [f"run.output_dir={tmp_path / 'run'}", "run.progress=false", *overrides]))


def test_each_stage_names_the_folder_its_steps_write(tmp_path):
    ctx = _ctx(tmp_path)
    p = ctx.paths
    folders = {step: stage.output_dir(ctx, step) for stage in STAGES.values() for step in stage.steps(ctx)}
    assert set(folders) == set(stage_hashes(ctx))
    assert folders["synth"] == p.synth_output.parent == p.root / "synth"
    assert folders["audit"] == p.audit_dir
    assert folders["mix"] == p.mix_dir
    assert folders["train-baseline"] == p.rm_dir("baseline") and folders["train-music"] == p.rm_dir("music")
    for name in ctx.config.eval.evaluators:
        assert folders[f"eval-{name}"] == p.eval_dir(name)


def test_a_folder_moved_by_its_own_key_is_not_shared(tmp_path):
    ctx = _ctx(tmp_path, f"synth.output={tmp_path / 'elsewhere' / 'pairs.jsonl'}", f"audit.output_dir={tmp_path / 'a'}",
               f"mix.output_dir={tmp_path / 'm'}")
    assert [STAGES[s].output_dir(ctx, s) for s in ("synth", "audit", "mix")] == [None, None, None]


def test_the_old_import_path_still_answers(tmp_path):
    from music_core.sweep import shared

    ctx = _ctx(tmp_path)
    assert shared.shared_step is shared_step
    assert shared.step_dir(ctx, "mix") == ctx.paths.mix_dir
    assert shared.step_dir(ctx, "train-music") == ctx.paths.rm_dir("music")
    assert shared.step_dir(ctx, "nothing") is None


def test_a_step_made_once_is_linked_into_the_next_run(tmp_path):
    store, first, second = tmp_path / "store", tmp_path / "one" / "mix", tmp_path / "two" / "mix"
    with shared_step(store, "mix", "h1", first) as claim:
        assert claim.made is None
        (first / "train.jsonl").write_text("{}\n")
        claim.finish({"hash": "h1"})
    with shared_step(store, "mix", "h1", second) as claim:
        assert claim.made == {"hash": "h1"}
    assert second.is_symlink() and (second / "train.jsonl").read_text() == "{}\n"
    assert json.loads((store / "mix" / "h1.done.json").read_text()) == {"hash": "h1"}
