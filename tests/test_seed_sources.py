"""Seed sources read each public format by local path; seeds are cut reproducibly."""

from __future__ import annotations

from pathlib import Path

import pytest

from music_core import records
from music_core.config import load_config
from music_core.config.schema import DataSourceConfig, SeedsConfig
from music_core.errors import ConfigError, RecordError
from music_core.synth.seeds import select

FIX = Path(__file__).parent / "fixtures"


def source(plugins, name):
    return plugins.registry.create("seed_source", name)


def test_builtin_set_sizes(plugins):
    cfg = DataSourceConfig(source="builtin")
    pairs, convs = source(plugins, "builtin").load_pairs(cfg), source(plugins, "builtin").load_conversations(cfg)
    assert len(pairs) >= 60 and len(convs) >= 60
    assert all(sum(m["role"] == "user" for m in c.messages) >= 2 for c in convs)  # multi-turn
    assert len({p.meta["domain"] for p in pairs}) >= 6
    assert len(source(plugins, "builtin-prompts").load_conversations(DataSourceConfig(source="builtin-prompts"))) >= 20


def test_skywork_and_hh_and_ultrainteract(plugins):
    sky = source(plugins, "skywork").load_pairs(DataSourceConfig(source="skywork", path=str(FIX / "skywork.jsonl")))
    assert [p.source for p in sky] == ["math-fixture", "chat-fixture"] and sky[0].rejected[-1]["content"] == "7"
    hh = source(plugins, "hh-rlhf")
    with records.reading("hh", records.RecordPolicy(max_invalid_fraction=0.5)) as tally:
        pairs = hh.load_pairs(DataSourceConfig(source="hh-rlhf", path=str(FIX / "hh.jsonl")))
    assert len(pairs) == 1 and pairs[0].chosen[-1] == {"role": "assistant", "content": "About 6 minutes."}
    assert dict(tally.skipped) == {"identical_sides": 1} and tally.examples[0].startswith(f"{FIX / 'hh.jsonl'}:2:")
    with pytest.raises(RecordError, match=r"1 of 2 records unusable .*max_invalid_fraction"):  # over the default budget
        hh.load_pairs(DataSourceConfig(source="hh-rlhf", path=str(FIX / "hh.jsonl")))
    prompts = hh.load_conversations(DataSourceConfig(source="hh-rlhf", path=str(FIX / "hh.jsonl")))
    assert prompts[0].messages[-1] == {"role": "user", "content": "And a soft one?"}
    ui = source(plugins, "ultrainteract")
    assert ui.load_conversations(DataSourceConfig(source="ultrainteract", path=str(FIX / "ultrainteract_sft.jsonl")))[0].id == "ui-1"
    assert ui.load_pairs(DataSourceConfig(source="ultrainteract", path=str(FIX / "ultrainteract_pair.jsonl")))[0].chosen[-1]["content"] == "x = 2"


def test_file_source_without_path_names_the_key(plugins):
    with pytest.raises(ConfigError, match="needs a path"):
        source(plugins, "skywork").load_pairs(DataSourceConfig(source="skywork"))


def test_hub_id_offline_is_a_clear_error(plugins):
    from music_core.errors import MusicError

    with pytest.raises(MusicError, match="local file or folder path"):
        source(plugins, "skywork").load_pairs(DataSourceConfig(source="skywork", path="Skywork/no-such-set-xyz"))


def test_cuts_are_seeded_and_reproducible(plugins):
    convs = source(plugins, "builtin").load_conversations(DataSourceConfig(source="builtin"))
    a = select(convs, SeedsConfig(limit=10, seed=1, max_context_turns=3))
    b = select(convs, SeedsConfig(limit=10, seed=1, max_context_turns=3))
    c = select(convs, SeedsConfig(limit=10, seed=2, max_context_turns=3))
    assert a == b and [s.id for s in a] != [s.id for s in c]
    assert {s.context_turns for s in select(convs, SeedsConfig(limit=None, seed=0))} == {0, 1}
    for s in a:  # the cut starts right before a user turn
        assert not s.context or s.context[-1]["role"] == "assistant"


def test_default_config_uses_builtin_sources():
    cfg = load_config(None)
    assert cfg.seeds.source == "builtin" and cfg.mix.original.source == "builtin"
