"""The depth benchmark: pairs identical except one answer at depth d from the end, and scripted
reward models whose accuracy by depth is known exactly. ``last`` reads only the last assistant
message (its length), ``whole`` checks every answer against the one its conversation should
have, ``cut`` is ``whole`` with the first exchange of long conversations cut away."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from music_depth.build import build_pairs, divergence, first_sentence

from music_core import hookimpl
from music_core.cli import cli
from music_core.config import load_config
from music_core.context import RunContext
from music_core.contracts import RewardScorer, Seen, Trainer
from music_core.data import Conversation
from music_core.errors import ConfigError, RecordError
from music_core.evaluation import run_evaluator
from music_core.plugins import temporary_plugin

FAST = ["eval.depth.bootstrap=200"]


def answer(topic: int, turn: int) -> str:
    """Two or more sentences; the same length for every topic at a turn, longer at each turn."""
    return f"Answer {turn} on topic {topic}." + " Detail." * (turn + 1)


def conversation(topic: int, turns: int, *, system: bool = False, trailing_user: bool = False) -> list[dict]:
    msgs = [{"role": "system", "content": "Be brief."}] if system else []
    for k in range(turns):
        msgs += [{"role": "user", "content": f"Topic {topic}: question {k}?"},
                 {"role": "assistant", "content": answer(topic, k)}]
    return msgs + ([{"role": "user", "content": "And then?"}] if trailing_user else [])


ROWS = [{"id": "c1", "messages": conversation(1, 3)},
        {"id": "c2", "messages": conversation(2, 3, system=True)},
        {"id": "c3", "messages": conversation(3, 3, trailing_user=True)},
        {"id": "c4", "messages": conversation(4, 2)},
        {"id": "c5", "messages": conversation(5, 1)}]


def write_conversations(path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def topic_of(conv: list[dict]) -> int:
    return int(re.search(r"Topic (\d+):", next(m["content"] for m in conv if m["role"] == "user")).group(1))


def right_answers(conv: list[dict], skip_first: bool = False) -> int:
    answers = [m["content"] for m in conv if m["role"] == "assistant"]
    return sum(a == answer(topic_of(conv), k) for k, a in enumerate(answers) if not (skip_first and k == 0))


class LastScorer(RewardScorer):
    def score(self, conversations):
        return [float(len(c[-1]["content"])) for c in conversations]


class WholeScorer(RewardScorer):
    def score(self, conversations):
        return [float(right_answers(c)) for c in conversations]


class CutScorer(RewardScorer):
    """Long conversations (3+ answers) lose their first exchange, and say so."""

    def score(self, conversations):
        return self.score_seen(conversations)[0]

    def score_seen(self, conversations):
        long = [sum(m["role"] == "assistant" for m in c) >= 3 for c in conversations]
        return ([float(right_answers(c, skip_first=cut)) for c, cut in zip(conversations, long)],
                [Seen(100, cut, cut) for cut in long])


SCORERS = {"last": LastScorer, "whole": WholeScorer, "cut": CutScorer}


class ScriptedTrainer(Trainer):
    name = "depth-scripted"

    def train(self, cfg):
        raise NotImplementedError

    def load_scorer(self, model_dir, batch_size=None):
        return SCORERS[Path(model_dir).name]()


class ScriptedPlugin:
    @hookimpl
    def register_trainers(self, register):
        register(ScriptedTrainer)


def evaluate(tmp_path: Path, plugins, *overrides: str, rms=("last", "whole")) -> tuple[dict, Path]:
    folders = {}
    for name in rms:
        (tmp_path / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / name / "music_rm.json").write_text(json.dumps({"trainer": "depth-scripted"}))
        folders[name] = str(tmp_path / name)
    with temporary_plugin(ScriptedPlugin(), "depth-scripted"):
        cfg = load_config(None, [f"run.output_dir={tmp_path / 'run'}", "run.progress=false", *FAST, *overrides],
                          evaluators=("depth",))
        out = run_evaluator(RunContext(cfg, plugins.registry), "depth", folders)
    return json.loads(Path(out["results_path"]).read_text()), Path(out["markdown_path"])


def built(depths=(0, 1, 2), seed=0):
    return build_pairs([Conversation(r["id"], r["messages"]) for r in ROWS], depths, seed=seed)


def test_pairs_differ_in_one_answer_at_the_stated_depth():
    b = built()
    assert b.pairs and b == built()  # the same seed makes the same pairs
    originals = {r["id"]: r["messages"][:-1] if r["id"] == "c3" else r["messages"] for r in ROWS}
    for p in b.pairs:
        index, depth, turns = divergence(p)
        assert p.chosen == originals[p.meta["source_id"]] and p.chosen[-1]["role"] == "assistant"  # trailing user trimmed
        assert len(p.rejected) == len(p.chosen)
        assert [i for i, (c, r) in enumerate(zip(p.chosen, p.rejected)) if c != r] == [index]
        assert p.chosen[index]["role"] == "assistant" == p.rejected[index]["role"]
        assert (depth, turns, index) == (p.meta["depth"], p.meta["num_turns"], p.meta["message_index"])
        assert sum(m["role"] == "assistant" for m in p.chosen[index + 1:]) == p.meta["depth"]
        new = p.rejected[index]["content"]
        if p.meta["defect"] == "repeat":
            assert new == p.chosen[index - 2]["content"]
        elif p.meta["defect"] == "first-sentence":
            assert p.chosen[index]["content"].startswith(new) and len(new) < len(p.chosen[index]["content"])
        else:  # another conversation's answer at the same turn number
            assert new != p.chosen[index]["content"] and new in {answer(t, depth_turn(p)) for t in range(1, 6)}
    counts = b.counts()
    # 5 conversations at d=0; 4 with 2+ answers at d=1; 3 with 3 at d=2. No repeat at a first answer.
    assert counts["by_depth_kind"] == {"0/first-sentence": 5, "0/off-topic": 5, "0/repeat": 4,
                                       "1/first-sentence": 4, "1/off-topic": 4, "1/repeat": 3,
                                       "2/first-sentence": 3, "2/off-topic": 3}
    assert b.left_out["repeat: does not apply"] == 1 + 1 + 3  # c5 at d=0, c4 at d=1, the three at d=2


def depth_turn(p) -> int:
    return p.meta["num_turns"] - 1 - p.meta["depth"]


def test_first_sentence_only_where_it_shortens():
    assert first_sentence("One. Two.") == "One."
    assert first_sentence("Just one.") is None and first_sentence("no stop at all") is None
    assert first_sentence("Line one\nline two") == "Line one"


def test_a_last_turn_rm_is_right_at_d0_and_exactly_half_after_and_a_whole_one_always(tmp_path, plugins):
    r, report = evaluate(tmp_path, plugins, f"eval.depth.conversations={write_conversations(tmp_path / 'c.jsonl')}")
    last, whole = r["models"]["last"], r["models"]["whole"]
    # the last answer is shorter after first-sentence and repeat; another topic's answer at the same turn is as long
    assert [last["by_depth_kind"][f"0/{k}"]["accuracy"] for k in ("first-sentence", "repeat", "off-topic")] == [1.0, 1.0, 0.5]
    assert last["by_depth"]["1"]["accuracy"] == 0.5 and last["by_depth"]["2"]["accuracy"] == 0.5
    assert last["d>=1"] == {"n": 17, "accuracy": 0.5, "ci95": [0.5, 0.5]}
    assert all(a["accuracy"] == 1.0 for a in whole["by_depth"].values()) and whole["ties"] == 0
    d1 = next(p for p in r["paired"]["d>=1"] if {p["a"], p["b"]} == {"last", "whole"})
    assert abs(d1["difference"]) == 0.5 and d1["n"] == 17 and (d1["a_only"], d1["b_only"]) in ((0, 17), (17, 0))
    assert r["n_scored"] == r["pairs"] == 31 and set(r["item_hits"]["last"]) == {p.id for p in built().pairs}
    assert r["headline"][0].startswith("depth: at d>=1")
    assert Path(r["figure"]).exists() and r["figure"].endswith("depth_curve.png")
    text = report.read_text()
    assert "Chance is 0.5" in text and "falls to about chance at `d >= 1`" in text and "![accuracy by depth]" in text
    card = Path(r["built"]["card"]).read_text()
    assert "seed: 0" in card and "| 2 | 3 | 0 | 3 | 6 |" in card  # d=2: off-topic 3, repeat 0, first-sentence 3


def test_a_defect_truncation_cut_away_is_not_visible_and_reported_apart(tmp_path, plugins):
    r, report = evaluate(tmp_path, plugins, f"eval.depth.conversations={write_conversations(tmp_path / 'c.jsonl')}",
                         rms=("cut",))
    cut = r["models"]["cut"]
    # the three 3-answer conversations lose their first exchange: their d=2 defects (6 pairs) are ties
    assert cut["not_visible"] == 6 and cut["by_depth"]["2"]["accuracy"] == 0.5
    assert cut["by_depth_visible"].get("2") is None and cut["d>=1_visible"] == {"n": 11, "accuracy": 1.0, "ci95": [1.0, 1.0]}
    assert r["truncation"]["cut"]["first_turn_cut"] > 0
    assert "not visible" in report.read_text()
    assert r["headline"] == [f"depth: cut at d>=1: {cut['d>=1']['accuracy']:.3f} [{cut['d>=1']['ci95'][0]:.2f}, "
                             f"{cut['d>=1']['ci95'][1]:.2f}] (n=17) (chance 0.5)"]


def test_bench_writes_a_file_datasets_loads_and_a_card_and_eval_scores_it(tmp_path, plugins):
    # a preference file's chosen sides (an HH transcript among them) are conversations too
    pairs = [{"chosen": "\n\nHuman: Topic 7: hi?\n\nAssistant: Answer 0 on topic 7. Detail.\n\nHuman: Topic 7: more?"
                        "\n\nAssistant: Answer 1 on topic 7. Detail. Detail.",
              "rejected": "\n\nHuman: Topic 7: hi?\n\nAssistant: Answer 0 on topic 7. Detail.\n\nHuman: Topic 7: more?"
                          "\n\nAssistant: no"}]
    pairs += [{"id": r["id"], "chosen": r["messages"], "rejected": r["messages"][:-1] + [{"role": "assistant", "content": "x"}]}
              for r in ROWS if r["id"] != "c3"]
    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    out = tmp_path / "bench" / "depth.jsonl"
    res = CliRunner().invoke(cli, ["bench", "depth", "--conversations", str(src), "--out", str(out), "--depths", "0,1",
                                   "--kinds", "repeat,first-sentence", "--seed", "3"])
    assert res.exit_code == 0, res.output
    import datasets

    ds = datasets.load_dataset("json", data_files=str(out), split="train")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(ds) == len(rows) == 5 + 4 + 4 + 2  # first-sentence at d 0 and 1; repeat where there is a previous answer
    assert set(ds.column_names) == {"id", "chosen", "rejected", "source", "meta"}
    assert {row["meta"]["defect"] for row in rows} == {"repeat", "first-sentence"}
    card = (tmp_path / "bench" / "depth.card.md").read_text()
    assert f"--conversations {src}" in card and "--seed 3" in card and "read 5 records, kept 5" in card
    r, _ = evaluate(tmp_path, plugins, f"eval.depth.data={out}", rms=("whole",))
    assert r["pairs"] == len(rows) and r["models"]["whole"]["all"]["accuracy"] == 1.0 and r["built"] is None


def test_by_default_it_builds_from_the_runs_held_out_pairs_capped_and_names_its_sweep_columns(tmp_path, plugins):
    """No data and no conversations: the chosen sides of the mix's eval split (as `music run`
    leaves it), at most eval.depth.limit of them, a seeded sample said in the report; the
    headline a sweep table shows is d = 0 and d >= 1, each paired on its own pairs."""
    from music_depth.evaluator import Depth

    held_out = tmp_path / "run" / "mix" / "eval.jsonl"
    held_out.parent.mkdir(parents=True)
    rows = [r for r in ROWS if r["id"] != "c3"]  # a pair ends with an answer
    held_out.write_text("".join(json.dumps({"id": r["id"], "chosen": r["messages"], "rejected": r["messages"][:-1] + [
        {"role": "assistant", "content": "no"}]}) + "\n" for r in rows))
    r, report = evaluate(tmp_path, plugins, "eval.depth.limit=3")
    assert r["built"]["held_out"] and r["built"]["from"] == str(held_out)
    assert r["built"]["sampled"] == {"conversations": 4, "used": 3, "limit": 3}
    sources = {p.split("/")[0] for p in r["item_hits"]["last"]}
    assert len(sources) == 3 and sources <= {row["id"] for row in rows}
    assert "the chosen sides of the run's held-out pairs; a seeded sample of 3 of its 4 conversations" in report.read_text()
    again, _ = evaluate(tmp_path, plugins, "eval.depth.limit=3")
    assert again["item_hits"] == r["item_hits"]  # the same seed, the same sample
    columns = Depth.headline(r, "last")
    assert set(columns) == {"depth accuracy d = 0", "depth accuracy d >= 1"}
    late = columns["depth accuracy d >= 1"]
    assert late["value"] == 0.5 and late["group"] == "depth" and late["ci95"] == [0.5, 0.5]
    assert set(late["hits"]) == {i for i, d in r["item_depths"].items() if d >= 1} and set(late["hits"].values()) == {0.5}
    assert set(columns["depth accuracy d = 0"]["hits"]) == {i for i, d in r["item_depths"].items() if d == 0}
    assert Depth.headline(r, "nobody") == {}


def test_a_file_that_is_not_a_depth_benchmark_is_an_error_naming_it(tmp_path, plugins):
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"id": "p", "chosen": conversation(1, 1), "rejected": conversation(1, 1)[:1] + [
        {"role": "assistant", "content": "no"}]}) + "\n")
    with pytest.raises(RecordError, match="plain.jsonl.*meta has no 'depth'"):
        evaluate(tmp_path, plugins, f"eval.depth.data={plain}")


@pytest.mark.parametrize("overrides,key", [(["eval.depth.data=a.jsonl", "eval.depth.conversations=b.jsonl"], "data"),
                                           (["eval.depth.kinds=[off-topic,typo]"], "kinds"),
                                           (["eval.depth.depths=[-1]"], "depths"),
                                           (["eval.depth.limit=0"], "limit")])
def test_config_errors_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=f"eval.depth.{key}"):
        load_config(None, overrides, evaluators=("depth",))
