"""``music mix``: counts and ratios, dedupe, leak-free group splits, atomic outputs."""

from __future__ import annotations

import json

import pytest

from music_core.config import load_config
from music_core.context import RunContext
from music_core.data import PreferencePair
from music_core.errors import RecordError
from music_core.jsonl import read_records
from music_core.mix import pair_group, run_mix


def conv(*turns):
    return [{"role": ["user", "assistant"][i % 2], "content": t} for i, t in enumerate(turns)]


@pytest.fixture
def builtin_pairs(plugins):
    cfg = load_config(None)
    return plugins.registry.create("seed_source", "builtin").load_pairs(cfg.mix.original)


def fake_synthetic(builtin_pairs, n):
    """Synthetic pairs grown from the built-in conversations, as `music synth` writes them."""
    from music_core.synth.seeds import group_key

    out = []
    for i, p in enumerate(builtin_pairs[:n]):
        out.append({"id": f"music-{i}", "chosen": p.chosen[:1] + [{"role": "assistant", "content": f"good {i}"}],
                    "rejected": p.chosen[:1] + [{"role": "assistant", "content": f"bad {i}"}], "source": "music",
                    "meta": {"seed_group": group_key(p.chosen), "strategy": "x"}})
    return out


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def ctx_for(tmp_path, plugins, *extra):
    return RunContext(load_config(None, [f"run.output_dir={tmp_path}", *extra]), plugins.registry)


def test_mix_counts_split_and_no_group_leaks(tmp_path, plugins, builtin_pairs):
    syn = tmp_path / "synth" / "pairs.jsonl"
    syn.parent.mkdir()
    records = fake_synthetic(builtin_pairs, 40)
    write(syn, records + records[:3])  # three duplicates
    summary = run_mix(ctx_for(tmp_path, plugins, "mix.eval_fraction=0.25"))
    assert summary["duplicates_dropped"]["synthetic"] == 3
    train = read_records(tmp_path / "mix" / "train.jsonl", PreferencePair.from_dict)
    held = read_records(tmp_path / "mix" / "eval.jsonl", PreferencePair.from_dict)
    base = read_records(tmp_path / "mix" / "original_train.jsonl", PreferencePair.from_dict)
    assert len(train) + len(held) == 40 + len(builtin_pairs)
    assert {p.source for p in base} == {"builtin"} and len(base) == summary["train"]["original"]
    assert 0.1 < len(held) / (len(train) + len(held)) < 0.4
    # a synthetic pair and the original pair its seed came from never straddle the split
    assert not {pair_group(p) for p in train} & {pair_group(p) for p in held}


def test_ratio_and_counts(tmp_path, plugins, builtin_pairs):
    syn = tmp_path / "synth" / "pairs.jsonl"
    syn.parent.mkdir()
    write(syn, fake_synthetic(builtin_pairs, 60))
    s = run_mix(ctx_for(tmp_path, plugins, "mix.synthetic_ratio=0.25", "mix.eval_fraction=0"))
    total = s["train"]["total"]
    assert abs(s["train"]["synthetic"] / total - 0.25) < 0.02
    s = run_mix(ctx_for(tmp_path, plugins, "mix.synthetic_count=10", "mix.original_count=20", "mix.eval_fraction=0"))
    assert s["train"] == {"total": 30, "synthetic": 10, "original": 20}


def test_dedupe_switch_and_original_limit_are_honoured(tmp_path, plugins, builtin_pairs):
    syn = tmp_path / "synth" / "pairs.jsonl"
    syn.parent.mkdir()
    records = fake_synthetic(builtin_pairs, 10)
    write(syn, records + records[:2])
    kept = run_mix(ctx_for(tmp_path, plugins, "mix.dedupe=false", "mix.eval_fraction=0", "mix.original.limit=7"))
    assert kept["duplicates_dropped"] == {"synthetic": 0, "original": 0, "across": 0}
    assert kept["train"] == {"total": 12 + 7, "synthetic": 12, "original": 7}
    again = run_mix(ctx_for(tmp_path, plugins, "mix.eval_fraction=0", "mix.original.limit=7"))
    assert again["duplicates_dropped"]["synthetic"] == 2 and again["train"]["original"] == 7
    first = [p.id for p in read_records(tmp_path / "mix" / "original_train.jsonl", PreferencePair.from_dict)]
    run_mix(ctx_for(tmp_path, plugins, "mix.eval_fraction=0", "mix.original.limit=7"))
    assert [p.id for p in read_records(tmp_path / "mix" / "original_train.jsonl", PreferencePair.from_dict)] == first


def test_bad_synthetic_record_names_file_and_line_and_writes_nothing(tmp_path, plugins, builtin_pairs):
    syn = tmp_path / "synth" / "pairs.jsonl"
    syn.parent.mkdir()
    good = fake_synthetic(builtin_pairs, 2)
    bad = dict(good[1], rejected=conv("a totally different start", "x"))
    write(syn, [good[0], bad])
    with pytest.raises(RecordError) as err:
        run_mix(ctx_for(tmp_path, plugins))
    assert f"{syn}:2:" in str(err.value) and "same prefix" in str(err.value)
    assert not (tmp_path / "mix").exists()


def test_a_named_synthetic_file_that_is_missing_is_a_clear_error(tmp_path, plugins):
    from music_core.errors import MusicError

    with pytest.raises(MusicError, match="run `music synth` first"):
        run_mix(ctx_for(tmp_path, plugins, f"mix.synthetic=[{tmp_path / 'nope.jsonl'}]"))


def test_mix_and_train_on_original_data_alone(tmp_path):
    """No synthesis output: `music mix` mixes the original data alone and `music train` trains on it."""
    import subprocess
    import sys

    common = [f"run.output_dir={tmp_path}", "run.progress=false"]
    mix = subprocess.run([sys.executable, "-m", "music_core", "mix", *common], capture_output=True, text=True)
    assert mix.returncode == 0 and "mixing the original data alone" in mix.stderr, mix.stderr
    summary = json.loads((tmp_path / "mix" / "summary.json").read_text())
    assert summary["train"]["synthetic"] == 0 and summary["train"]["original"] > 0
    train = subprocess.run([sys.executable, "-m", "music_core", "train", *common, "train.max_steps=2",
                            "train.batch_size=4"], capture_output=True, text=True)
    assert train.returncode == 0, train.stderr
    assert json.loads((tmp_path / "rm" / "metrics.json").read_text())["steps"] == 2


def test_an_original_source_without_pairs_is_refused_naming_the_key(tmp_path, plugins):
    from music_core.errors import ConfigError

    with pytest.raises(ConfigError, match="mix.original.source.*builtin-prompts"):
        run_mix(ctx_for(tmp_path, plugins, "mix.original.source=builtin-prompts"))
    assert not (tmp_path / "mix").exists()
