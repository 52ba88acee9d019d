"""The data model, JSONL readers/writers and format conversion."""

from __future__ import annotations

import json

import pytest

from music_core.data import PreferencePair, conversation_errors
from music_core.errors import RecordError
from music_core.formats import (
    dataset_to_pairs,
    load_conversations,
    load_pairs,
    pair_from_record,
    pairs_to_dataset,
)
from music_core.jsonl import AppendOnlyJsonl, read_records, write_jsonl_atomic


def conv(*turns):
    roles = ["user", "assistant"]
    return [{"role": roles[i % 2], "content": t} for i, t in enumerate(turns)]


GOOD = {"id": "p1", "chosen": conv("hi", "hello!"), "rejected": conv("hi", "go away"), "source": "t", "meta": {}}


@pytest.mark.parametrize("messages,needle", [
    ([], "non-empty"),
    ([{"role": "robot", "content": "x"}], "unknown role"),
    ([{"role": "user", "content": "  "}], "empty"),
    (conv("a", "b") + [{"role": "assistant", "content": "c"}], "alternate"),
    ([{"role": "user", "content": "a"}, {"role": "system", "content": "s"}], "only the first"),
    ([{"role": "assistant", "content": "a"}], "'user' was expected"),
    ([{"role": "user", "content": "a", "name": "x"}], "unknown keys"),
])
def test_conversation_rules(messages, needle):
    errs = conversation_errors(messages)
    assert errs and any(needle in e for e in errs), errs


def test_pair_rules():
    assert PreferencePair.from_dict(GOOD).id == "p1"
    with pytest.raises(ValueError, match="same prefix"):
        PreferencePair.from_dict({**GOOD, "rejected": conv("other", "x")})
    with pytest.raises(ValueError, match="identical"):
        PreferencePair.from_dict({**GOOD, "rejected": GOOD["chosen"]})
    with pytest.raises(ValueError, match="end with an assistant"):
        PreferencePair.from_dict({**GOOD, "rejected": conv("hi", "x", "more?")})
    with pytest.raises(ValueError, match="unknown keys"):
        PreferencePair.from_dict({**GOOD, "extra": 1})


def test_reader_names_file_and_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + json.dumps({**GOOD, "id": "p2", "chosen": conv("hi")}) + "\n")
    with pytest.raises(RecordError) as err:
        read_records(path, PreferencePair.from_dict)
    assert f"{path}:3:" in str(err.value) and "chosen" in str(err.value)
    path.write_text(json.dumps(GOOD) + "\n{not json\n")
    with pytest.raises(RecordError, match=r"pairs.jsonl:2: invalid JSON"):
        read_records(path, PreferencePair.from_dict)


def test_append_only_writer_resumes_and_cuts_torn_tail(tmp_path):
    path = tmp_path / "out.jsonl"
    with AppendOnlyJsonl(path) as out:
        out.append({"id": "a", "x": 1})
        out.append({"id": "b", "x": 2})
        with pytest.raises(ValueError, match="already written"):
            out.append({"id": "a", "x": 3})
    with path.open("a") as fh:  # what a kill in the middle of a write leaves
        fh.write('{"id": "c", "x": ')
    with AppendOnlyJsonl(path) as out:
        assert out.repaired_bytes > 0
        assert out.done_ids == {"a", "b"}
        out.append({"id": "c", "x": 3})
    lines = path.read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["a", "b", "c"]


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "out.jsonl"
    write_jsonl_atomic(path, [{"id": 1}])

    def boom():
        yield {"id": 2}
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        write_jsonl_atomic(path, boom())
    assert path.read_text() == '{"id":1}\n'
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind


def test_formats_skywork_trl_sharegpt(tmp_path):
    sky = {"chosen": conv("q", "good"), "rejected": conv("q", "bad"), "source": "helpsteer"}
    trl = {"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "good"}],
           "rejected": [{"role": "assistant", "content": "bad"}]}
    share = {"conversations": [{"from": "human", "value": "q"}], "chosen": {"from": "gpt", "value": "good"},
             "rejected": {"from": "gpt", "value": "bad"}}
    pairs = [pair_from_record(r) for r in (sky, trl, share)]
    assert all(p.chosen == conv("q", "good") and p.rejected == conv("q", "bad") for p in pairs)
    assert pairs[0].source == "helpsteer" and pairs[0].id == pairs[1].id  # content-addressed ids
    f = tmp_path / "sharegpt.jsonl"
    f.write_text(json.dumps({"id": "s1", "conversations": [{"from": "system", "value": "be brief"},
                                                           {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}) + "\n")
    convs = load_conversations(str(f))
    assert convs[0].messages[0] == {"role": "system", "content": "be brief"} and convs[0].id == "s1"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(sky) + "\n" + json.dumps({"conversations": [{"from": "alien", "value": "x"}]}) + "\n")
    with pytest.raises(RecordError, match=r"bad.jsonl:2: .*alien"):
        load_conversations(str(bad))


def test_layouts_of_public_preference_sets_read_as_the_same_pair(tmp_path):
    """Held-out sets come in layouts of their own; each reads as the same conversation pair."""
    q = [{"role": "user", "content": "q"}]
    layouts = {
        # UltraFeedback binarized, HelpSteer2 preference: a prompt, and sides that already start with it
        "prompt and whole sides": {"prompt": "q", "chosen": conv("q", "good"), "rejected": conv("q", "bad")},
        # TRL's standard (non-conversational) explicit-prompt layout
        "prompt and answer strings": {"prompt": "q", "chosen": "good", "rejected": "bad"},
        "prompt messages and answer strings": {"prompt": q, "chosen": "good", "rejected": "bad"},
        # the multimodal chat layout: content as a list of parts
        "content parts": {"chosen": [{"role": "user", "content": [{"type": "text", "text": "q"}]},
                                     {"role": "assistant", "content": [{"type": "text", "text": "good"}]}],
                          "rejected": conv("q", "bad")},
        # ShareGPT speakers inside a messages list (from/value, human/gpt)
        "from and value": {"chosen": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "good"}],
                           "rejected": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "bad"}]},
    }
    for name, record in layouts.items():
        pair = pair_from_record(record)
        assert (pair.chosen, pair.rejected) == (conv("q", "good"), conv("q", "bad")), name
    hh = {"chosen": "\n\nHuman: q\n\nAssistant: good", "rejected": "\n\nHuman: q\n\nAssistant: bad"}
    f = tmp_path / "hh.jsonl"
    f.write_text(json.dumps(hh) + "\n")
    # Anthropic HH transcripts as published load wherever a preference file is read
    [pair] = load_pairs(str(f))
    assert (pair.chosen, pair.rejected) == (conv("q", "good"), conv("q", "bad"))


def test_datasets_round_trip_and_load_dataset_json(tmp_path):
    import datasets

    pairs = [PreferencePair.from_dict(GOOD), PreferencePair.from_dict({**GOOD, "id": "p2", "meta": {"turns": [{"original": "a", "modified": None}]}})]
    ds = pairs_to_dataset(pairs)
    assert set(ds.column_names) >= {"chosen", "rejected"}
    back = dataset_to_pairs(ds)
    assert [p.to_dict() for p in back] == [p.to_dict() for p in pairs]
    path = tmp_path / "pairs.jsonl"
    write_jsonl_atomic(path, [p.to_dict() for p in pairs])
    loaded = datasets.load_dataset("json", data_files=str(path), split="train")
    assert loaded[0]["chosen"] == GOOD["chosen"]
    assert [p.id for p in load_pairs(str(path))] == ["p1", "p2"]
