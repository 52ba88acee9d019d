"""The record rule on files shaped like real public data: every edge case (an empty user turn,
an empty judged answer, identical sides, same-role runs, a non-text part, an HH transcript, a
conversation longer than max_length) is skipped and counted, merged and counted, or scored, and
the report says what was read and what the RM could not see."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_human_eval import FIX as HUMAN_FIX
from test_human_eval import evaluate

from music_core import records
from music_core.errors import RecordError
from music_core.formats import load_pairs


def conv(*turns: str) -> list[dict[str, str]]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]


def good(k: int) -> dict:
    return {"id": f"g{k}", "chosen": conv(f"q{k}", "a=2 b=0"), "rejected": conv(f"q{k}", "a=0 b=2")}


EDGE = [
    # skipped, one per reason
    {"id": "empty-user", "chosen": conv("q", "a=2 b=0", "  ", "a=2 b=0"), "rejected": conv("q", "a=2 b=0", "  ", "a=0 b=2")},
    {"id": "identical", "chosen": conv("q", "a=2 b=0"), "rejected": conv("q", "a=2 b=0")},
    {"id": "image", "chosen": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
                               {"role": "assistant", "content": "a=2 b=0"}], "rejected": conv("q", "a=0 b=2")},
    {"id": "order", "chosen": conv("q", "a=2 b=0")[::-1], "rejected": conv("q", "a=0 b=2")[::-1]},
    # kept
    {"id": "empty-answer", "chosen": conv("q", "a=2 b=0"), "rejected": conv("q", "")},  # scored, never dropped
    {"id": "same-role", "chosen": conv("q", "a=1 b=1") + [{"role": "assistant", "content": "a=2 b=0"}],
     "rejected": conv("q", "a=0 b=2")},
    {"id": "typed-text", "chosen": [{"role": "user", "content": [{"type": "text", "text": "q"}]},
                                    {"role": "assistant", "content": "a=2 b=0"}], "rejected": conv("q", "a=0 b=2")},
    {"chosen": "\n\nHuman: q\n\nAssistant: a=2 b=0", "rejected": "\n\nHuman: q\n\nAssistant: a=0 b=2"},  # HH
]


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def mixed_file(tmp_path: Path, n_good: int = 12) -> Path:
    return write(tmp_path / "pairs.jsonl", [good(k) for k in range(n_good)] + EDGE)


@pytest.fixture(autouse=True)
def _empty_answers_score_zero(monkeypatch):
    import re

    import test_human_eval

    def score(self, conversations):
        out = []
        for c in conversations:
            m = re.search(rf"\b{self.key}=(-?\d+)", c[-1]["content"])
            out.append(float(m.group(1)) if m else -1.0)  # an empty answer: scored low, still scored
        return out

    monkeypatch.setattr(test_human_eval.MarkerScorer, "score", score)


def test_pairwise_skips_counts_and_names_each_unusable_record_and_scores_the_rest(tmp_path, plugins):
    data = mixed_file(tmp_path)
    r = evaluate(tmp_path, plugins, "pairwise-accuracy", f"eval.pairwise.data={data}", "records.max_invalid_fraction=0.5")
    assert (r["n_total"], r["n_scored"], r["n_skipped"]) == (20, 16, 4)
    assert r["records"]["skipped_by_reason"] == {"empty_user_turn": 1, "identical_sides": 1, "non_text_part": 1,
                                                 "role_order": 1}
    assert r["records"]["merged_same_role_turns"] == 1
    assert r["records"]["first_skipped"][0].startswith(f"{data}:13: ")  # file:line of the first offender
    side = [json.loads(line) for line in Path(r["records"]["skipped_file"]).read_text().splitlines()]
    assert [s["where"] for s in side] == [f"{data}:{n}" for n in (13, 14, 15, 16)] and side[1]["record"]["id"] == "identical"
    # 16 scored: RM a prefers chosen everywhere (the empty answer scores -1), RM b never
    assert r["models"]["a"]["accuracy"] == 1.0 and r["models"]["b"]["accuracy"] == 1 / 16  # b: only the empty answer
    assert r["truncation"]["a"] == {"known": False}  # the marker scorer cannot say what it cut
    report = (tmp_path / "eval" / "pairwise-accuracy" / "report.md").read_text()
    assert "Records: read 20 records, kept 16; skipped 4 (an empty or whitespace user turn 1" in report
    assert "1 runs of same-role turns merged" in report and "truncation unknown" in report


def test_over_the_budget_is_an_error_naming_the_totals_and_strict_stops_at_the_first(tmp_path, plugins):
    data = mixed_file(tmp_path)
    with pytest.raises(RecordError, match=r"4 of 20 records unusable \(20\.0%, over records\.max_invalid_fraction=0\.05\)"):
        evaluate(tmp_path, plugins, "pairwise-accuracy", f"eval.pairwise.data={data}")
    with pytest.raises(RecordError, match=rf"{data}:13: .*records\.strict"):
        evaluate(tmp_path, plugins, "pairwise-accuracy", f"eval.pairwise.data={data}", "records.strict=true")
    assert not (tmp_path / "eval" / "pairwise-accuracy" / "results.json").exists()  # no partial output
    # a file error stays an error: not JSON, and a required column missing from the first record
    (tmp_path / "bad.jsonl").write_text('{"chosen": 1\n')
    with pytest.raises(RecordError, match=r"bad.jsonl:1: invalid JSON"):
        load_pairs(str(tmp_path / "bad.jsonl"))
    write(tmp_path / "cols.jsonl", [{"prompt": "q", "answer": "a"}])
    with pytest.raises(RecordError, match=r"cols.jsonl:1: .*required column is missing"):
        load_pairs(str(tmp_path / "cols.jsonl"))
    write(tmp_path / "all-bad.jsonl", [EDGE[1], EDGE[1]])
    with pytest.raises(RecordError, match=r"nothing usable left: 2 records read"):
        load_pairs(str(tmp_path / "all-bad.jsonl"))


@pytest.mark.parametrize("evaluator, key, name", [("pairwise-accuracy", "eval.pairwise.data", "pairs.jsonl"),
                                                 ("mt-bench-human", "eval.mt_bench_human.data", "mt.jsonl"),
                                                 ("pairwise-accuracy", "eval.pairwise.data", "pairs.json"),
                                                 ("rmb", "eval.rmb.data", "rmb.json")])
def test_an_empty_file_is_an_error_naming_it_and_nothing_is_written(tmp_path, plugins, evaluator, key, name):
    """'Nothing usable left' holds for a file with no record at all: an empty data file must not
    become a report over 0 items with accuracy nan."""
    data = tmp_path / name
    data.write_text("[]" if name.endswith(".json") else "\n")
    with pytest.raises(RecordError, match=rf"{data}: holds no records: nothing usable left"):
        evaluate(tmp_path, plugins, evaluator, f"{key}={data}")
    assert not list((tmp_path / "eval").rglob("results.json"))  # no partial output
    with pytest.raises(RecordError, match="holds no records"):
        load_pairs(str(data))
    # a folder is empty when every file in it is; one empty file beside real ones is no error
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.jsonl").write_text("")
    with pytest.raises(RecordError, match=rf"{folder}: holds no records"):
        load_pairs(str(folder))
    write(folder / "b.jsonl", [good(0)])
    assert len(load_pairs(str(folder))) == 1


def test_a_judged_empty_answer_is_scored_in_the_human_evaluators(tmp_path, plugins):
    """MT-Bench's own data holds an empty answer (llama-13b, question 127, turn 1): it is scored."""
    rows = [json.loads(line) for line in (HUMAN_FIX / "mt_bench_human.jsonl").open()]
    row = dict(rows[0])
    row["conversation_a"] = [dict(m) for m in row["conversation_a"]]
    row["conversation_a"][1]["content"] = ""
    row["turn"] = 1
    data = write(tmp_path / "mt.jsonl", rows + [row])
    (tmp_path / "1").mkdir()
    (tmp_path / "2").mkdir()
    before = evaluate(tmp_path / "1", plugins, "mt-bench-human", f"eval.mt_bench_human.data={HUMAN_FIX / 'mt_bench_human.jsonl'}")
    after = evaluate(tmp_path / "2", plugins, "mt-bench-human", f"eval.mt_bench_human.data={data}")
    assert after["n_total"] == before["n_total"] + 1 and after["n_skipped"] == 0
    assert after["items"] == before["items"] + (1 if row["judge"].startswith("expert") else 0)


def test_truncation_is_reported_with_accuracy_seen_whole_and_cut(tmp_path, plugins):
    from test_foreign_rm import plain_rm

    rm = plain_rm(tmp_path / "rm")
    (rm / "music_rm.json").write_text(json.dumps({"max_length": 48}))  # short, so that long conversations are cut
    long_turn = "word " * 60
    rows = [{"id": "short", "chosen": conv("hi", "yes"), "rejected": conv("hi", "no")},
            {"id": "long", "chosen": conv(long_turn, "x", "and then?", "yes"), "rejected": conv(long_turn, "x", "and then?", "no")}]
    data = write(tmp_path / "p.jsonl", rows)
    out = subprocess.run([sys.executable, "-m", "music_core", "eval", "pairwise", "--rm", f"r={rm}",
                          f"eval.pairwise.data={data}", f"run.output_dir={tmp_path / 'run'}", "run.progress=false"],
                         capture_output=True, text=True, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads((tmp_path / "run" / "eval" / "pairwise-accuracy" / "results.json").read_text())
    t = r["truncation"]["r"]
    assert (t["items"], t["cut"], t["first_turn_cut"], t["max_length"]) == (2, 1, 1, 48)
    assert t["accuracy_seen_whole"]["n"] == 1 and t["accuracy_cut"]["n"] == 1
    report = (tmp_path / "run" / "eval" / "pairwise-accuracy" / "report.md").read_text()
    assert "1 of 2 items cut to fit 48 tokens (50%); the whole first user turn cut away in 1 (50%)" in report


def test_a_mostly_cut_evaluation_says_so_naming_the_max_length():
    from music_core.scoring import describe_truncation

    line = describe_truncation("r", {"known": True, "items": 4, "cut": 3, "first_turn_cut": 2, "share_cut": 0.75,
                                     "share_first_turn_cut": 0.5, "max_length": 512, "backbone_max_length": 512})
    assert "Most items were scored cut" in line and "`train.max_length` (now 512; the backbone's limit is 512)" in line


def test_seed_and_mix_readers_count_and_list_what_they_skip(tmp_path, plugins):
    from music_core.config import load_config
    from music_core.context import RunContext
    from music_core.mix import run_mix
    from music_core.synth.runner import load_seeds

    data = mixed_file(tmp_path, n_good=80)
    cfg = load_config(None, [f"run.output_dir={tmp_path / 'run'}", "run.progress=false", "seeds.source=trl",
                             f"seeds.path={data}", "seeds.limit=16", "mix.original.source=trl", f"mix.original.path={data}"])
    ctx = RunContext(cfg, plugins.registry)
    read: dict = {}
    seeds = load_seeds(ctx, read)
    assert read["read"] == 88 and read["skipped"] == 4 and len(seeds) == 16  # seeds.limit
    assert len((tmp_path / "run" / "synth" / "skipped_seeds.jsonl").read_text().splitlines()) == 4
    summary = run_mix(ctx)
    assert summary["records"]["original"]["skipped_by_reason"]["identical_sides"] == 1
    assert len((tmp_path / "run" / "mix" / "skipped_records.jsonl").read_text().splitlines()) == 4


def test_inspect_serves_a_file_with_skipped_records_and_says_why(tmp_path):
    from test_inspect import free_port, request, serve

    rows = [good(k) for k in range(40)]
    rows[3], rows[4] = EDGE[0], EDGE[1]  # two unusable lines in the first page
    (tmp_path / "synth").mkdir()
    write(tmp_path / "synth" / "pairs.jsonl", rows)
    port = free_port()
    server = serve(tmp_path, port)
    try:
        deadline = time.time() + 30
        while not (meta := request(port, "/api/meta")[1])["ready"] and time.time() < deadline:
            time.sleep(0.1)
        assert meta["index_error"] is None
        assert meta["skipped"]["count"] == 2 and meta["skipped"]["by_reason"] == {"empty_user_turn": 1, "identical_sides": 1}
        status, page = request(port, "/api/pairs?offset=0&limit=10")
        assert status == 200 and [x["index"] for x in page["rows"]] == [0, 1, 2, 5, 6, 7, 8, 9]
        assert request(port, "/api/pairs?q=q7")[1]["total"] == 1  # the index (filters, search) works
        assert request(port, "/api/pair/3")[1]["index"] == 5  # stepping forward over the skipped lines
        assert request(port, "/api/pair/4?dir=-1")[1]["index"] == 2  # and back
    finally:
        server.kill()
        server.wait()


def test_reading_scope_counts_a_third_party_reader(tmp_path):
    """A plugin's own parser raising UnusableRecord is counted like the bundled readers."""
    from music_core.formats import read_each

    def parse(rec):
        if not rec.get("text"):
            raise records.UnusableRecord("empty_user_turn", "no text")
        return rec["text"]

    write(tmp_path / "t.jsonl", [{"text": "a"}] * 30 + [{"text": ""}])
    with records.reading("plugin") as tally:
        assert len(read_each(str(tmp_path / "t.jsonl"), parse)) == 30
    assert tally.summary()["skipped_by_reason"] == {"empty_user_turn": 1}
