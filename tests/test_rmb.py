"""RMB (pairwise and Best-of-N) on fixtures written in RMB's own schema: a folder tree like
RMB_dataset/ whose records hold an empty user turn, an empty answer, identical answers, a
non-text part, same-role turns, multi-turn conversations and one longer than the tiny RM's
max length. Two marker RMs (``[a=2 b=0]``: RM ``a`` gives this answer 2) make every figure
computable by hand; a tiny transformers RM is checked against a plain transformers computation
through the CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import scripted_trainer_plugin

from music_core.config import load_config
from music_core.context import RunContext
from music_core.contracts import RewardScorer
from music_core.errors import MusicError, RecordError
from music_core.evaluation import run_evaluator
from music_core.plugins import temporary_plugin

FIX = Path(__file__).parent / "fixtures" / "rmb" / "RMB_dataset"
LENIENT = "records.max_invalid_fraction=0.3"  # 4 of the fixture's 16 records are unusable on purpose
SKIPPED = {"pairwise/3": "identical_sides", "pairwise/4": "non_text_part", "pairwise/10": "empty_user_turn",
           "bon/101": "identical_sides"}


class MarkerScorer(RewardScorer):
    def __init__(self, key: str):
        self.key = key

    def score(self, conversations):
        found = [re.search(rf"\b{self.key}=(-?\d+)", c[-1]["content"]) for c in conversations]
        return [float(m.group(1)) if m else 0.0 for m in found]  # an empty answer has no marker: 0


def MarkerPlugin() -> object:
    return scripted_trainer_plugin("rmb-marker-test", MarkerScorer)


def evaluate(tmp_path: Path, plugins, *overrides: str) -> dict:
    rms = {}
    for key in ("a", "b"):
        (tmp_path / key).mkdir(parents=True, exist_ok=True)
        (tmp_path / key / "music_rm.json").write_text(json.dumps({"trainer": "rmb-marker-test"}))
        rms[key] = str(tmp_path / key)
    with temporary_plugin(MarkerPlugin(), "rmb-marker"):
        cfg = load_config(None, [f"run.output_dir={tmp_path}", "run.progress=false", *overrides], evaluators=("rmb",))
        out = run_evaluator(RunContext(cfg, plugins.registry), "rmb", rms)
    return json.loads(Path(out["results_path"]).read_text())


def counts(a: dict) -> tuple[int, int]:
    return round(a["accuracy"] * a["n"]), a["n"]


def test_pairwise_and_bon_accuracy_as_rmb_scores_it(tmp_path, plugins):
    r = evaluate(tmp_path, plugins, f"eval.rmb.data={FIX}", LENIENT)
    assert r["items"] == {"pairwise": 8, "bon": 4} and r["files"] == 3
    a, b = r["models"]["a"]["sets"], r["models"]["b"]["sets"]
    assert counts(a["pairwise"]["accuracy"]) == (6, 8) and counts(b["pairwise"]["accuracy"]) == (4, 8)
    assert counts(a["bon"]["accuracy"]) == (3, 4) and counts(b["bon"]["accuracy"]) == (2, 4)
    hits_a, hits_b = r["item_hits"]["a"], r["item_hits"]["b"]
    assert hits_b["pairwise/11"] == 0  # r(chosen) == r(reject): a tie is a loss
    assert hits_a["bon/102"] == 0 and hits_b["bon/100"] == 0  # a tie with one loser, or one loser above: a loss
    assert hits_a["pairwise/2"] == 0 and hits_b["pairwise/2"] == 1  # the empty answer was scored (0)
    assert hits_a["bon/104"] == 1 and hits_b["bon/103"] == 1  # an empty loser, two identical losers: scored
    assert set(hits_a) == {f"pairwise/{u}" for u in (0, 1, 2, 5, 11, 12, 13, 14)} | {f"bon/{u}" for u in (100, 102, 103, 104)}
    lo, hi = r["models"]["a"]["accuracy"]["ci95"]
    assert counts(r["models"]["a"]["accuracy"]) == (9, 12) and lo <= 0.75 <= hi  # both sets pooled, for sweeps
    # by goal, by the top two levels of category_path, by user turns (two same-role user turns merged into one)
    assert {k: counts(v) for k, v in a["pairwise"]["by_goal"].items()} == {"Harmlessness": (3, 4), "Helpfulness": (3, 4)}
    assert {k: counts(v) for k, v in a["pairwise"]["by_category"].items()} == {"Harmlessness/S1": (3, 4),
                                                                               "Helpfulness/Code": (3, 4)}
    assert {k: counts(v) for k, v in a["bon"]["by_category"].items()} == {"Helpfulness/Chat": (3, 4)}
    assert {k: counts(v) for k, v in a["pairwise"]["by_turns"].items()} == {"1": (2, 4), "2": (1, 1), "3-4": (2, 2),
                                                                            "5+": (1, 1)}
    assert {k: counts(v) for k, v in b["bon"]["by_turns"].items()} == {"1": (1, 3), "2": (1, 1)}
    pw = r["paired"]["pairwise"][0]
    assert (pw["a"], pw["b"], pw["n"], pw["a_only"], pw["b_only"]) == ("a", "b", 8, 4, 2)
    assert r["paired"]["bon"][0]["n"] == 4
    assert [h.split(":")[0] for h in r["headline"]] == ["rmb", "rmb"]
    assert "on 8 RMB pairwise items" in r["headline"][0] and "on 4 RMB Best-of-N items" in r["headline"][1]
    assert r["licence"] == "RMB ships no licence file; the data's terms are as its source says"
    assert r["truncation"]["a"]["known"] is False  # the marker scorer cannot say what it cut
    report = (tmp_path / "eval" / "rmb" / "report.md").read_text()
    assert "a tie is a loss" in report and "Harmlessness/S1" in report and "RMB ships no licence file" in report
    assert "read 16 records, kept 12; skipped 4" in report


def test_read_kept_skipped_counts_and_the_side_file(tmp_path, plugins):
    r = evaluate(tmp_path, plugins, f"eval.rmb.data={FIX}", LENIENT)
    assert (r["n_total"], r["n_scored"], r["n_skipped"]) == (16, 12, 4)
    assert r["records"]["skipped_by_reason"] == {"identical_sides": 2, "non_text_part": 1, "empty_user_turn": 1}
    assert r["records"]["merged_same_role_turns"] == 1 and r["records"]["kept"] == 12
    side = [json.loads(line) for line in Path(r["records"]["skipped_file"]).read_text().splitlines()]
    where = {s["where"].replace(str(FIX) + "/", ""): s["reason"] for s in side}
    assert where == {"BoN_set/Helpfulness/y.json[1]": "identical_sides",
                     "Pairwise_set/Harmlessness/S1.json[0]": "empty_user_turn",
                     "Pairwise_set/Helpfulness/Code/x.json[3]": "identical_sides",
                     "Pairwise_set/Helpfulness/Code/x.json[4]": "non_text_part"}
    uids = {s["record"].get("pair_uid") or s["record"].get("bon_uid") for s in side}
    assert uids == {"3", "4", "10", "101"}  # the records themselves, as read


def test_sets_a_single_file_and_limit(tmp_path, plugins):
    bon = evaluate(tmp_path / "bon", plugins, f"eval.rmb.data={FIX}", "eval.rmb.sets=[bon]", LENIENT)
    assert (bon["n_total"], bon["n_scored"], bon["files"], bon["items"]) == (5, 4, 1, {"bon": 4})
    one = evaluate(tmp_path / "one", plugins, f"eval.rmb.data={FIX / 'Pairwise_set/Harmlessness/S1.json'}", LENIENT)
    assert one["items"] == {"pairwise": 4, "bon": 0}
    assert set(one["models"]["a"]["sets"]["pairwise"]["by_category"]) == {"Harmlessness/S1"}
    cut = evaluate(tmp_path / "cut", plugins, f"eval.rmb.data={FIX}", "eval.rmb.limit=2", LENIENT)
    assert (cut["n_total"], cut["n_skipped"], cut["n_scored"], cut["items"]) == (16, 4, 4, {"pairwise": 2, "bon": 2})
    assert cut["left_out"] == {"pairwise items past eval.rmb.limit": 6, "Best-of-N items past eval.rmb.limit": 2}
    assert cut["records"]["kept"] == 12  # every record is read and counted; the limit applies to scoring


def test_strict_stops_at_the_first_unusable_record(tmp_path, plugins):
    with pytest.raises(RecordError, match=r"y\.json\[1\].*identical.*records\.strict"):
        evaluate(tmp_path, plugins, f"eval.rmb.data={FIX}", "records.strict=true")


def test_a_file_without_a_required_column_is_refused_naming_it(tmp_path, plugins):
    data = tmp_path / "RMB_dataset"
    shutil.copytree(FIX, data)
    x = data / "Pairwise_set/Helpfulness/Code/x.json"
    recs = json.loads(x.read_text())
    del recs[0]["reject"]
    x.write_text(json.dumps(recs))
    with pytest.raises(RecordError, match=r"x\.json\[0\]: missing required column 'reject'"):
        evaluate(tmp_path, plugins, f"eval.rmb.data={data}", LENIENT)


def test_without_data_it_is_skipped_and_bad_sets_are_refused():
    from music_rmb.evaluator import RMB
    from music_rmb.options import RMBConfig

    assert "eval.rmb.data" in RMB.skip_reason(RMBConfig())
    assert RMB.skip_reason(RMBConfig(data=str(FIX))) is None
    with pytest.raises(MusicError, match="eval.rmb.sets"):
        load_config(None, ["eval.rmb.sets=[pairwise,triples]"], evaluators=("rmb",))


# ---- a real (tiny) transformers RM through the CLI --------------------------------------------------

@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory):
    from test_foreign_rm import plain_rm

    return plain_rm(tmp_path_factory.mktemp("rmb-rm") / "tiny")  # max length 1024 tokens


def music_eval(tmp_path: Path, rm: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "music_core", "eval", "rmb", "--rm", f"tiny={rm}",
                           f"eval.rmb.data={FIX}", f"run.output_dir={tmp_path}", "run.progress=false", *overrides],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def fixture_items() -> dict[str, list[list[dict]]]:
    """Each scored item's conversations (preferred first), read from the fixture by hand."""
    def conv(rec, answer):
        msgs: list[dict] = []
        for t in rec["conversation_input"]:
            if msgs and msgs[-1]["role"] == t["role"]:
                msgs[-1] = {"role": t["role"], "content": msgs[-1]["content"] + "\n\n" + t["content"]}
            else:
                msgs.append({"role": t["role"], "content": t["content"]})
        return msgs + [{"role": "assistant", "content": answer}]

    out = {}
    for f in sorted(FIX.rglob("*.json")):
        for rec in json.loads(f.read_text()):
            if "pair_uid" in rec:
                uid, answers = f"pairwise/{rec['pair_uid']}", [rec["chosen"]["answer"], rec["reject"]["answer"]]
            else:
                uid, answers = f"bon/{rec['bon_uid']}", [rec["bon_best"]["answer"]] + [x["answer"] for x in rec["loser_list"]]
            if uid not in SKIPPED:
                out[uid] = [conv(rec, a) for a in answers]
    return out


def test_cli_accuracy_equals_a_plain_transformers_computation(tmp_path, tiny_rm):
    import torch
    from music_bt.scorer import HFRewardScorer
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    proc = music_eval(tmp_path, tiny_rm, LENIENT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((tmp_path / "eval" / "rmb" / "results.json").read_text())
    assert (r["n_total"], r["n_scored"], r["n_skipped"]) == (16, 12, 4)
    items = fixture_items()
    assert set(r["item_hits"]["tiny"]) == set(items)

    # by hand through the scorer, one item at a time: every item, the long one included
    scorer = HFRewardScorer(str(tiny_rm), batch_size=1)
    by_scorer = {uid: scorer.score(convs) for uid, convs in items.items()}
    # plain transformers: the chat template, the tokenizer, the model; the items that fit its length
    tok = AutoTokenizer.from_pretrained(tiny_rm)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_rm).eval()

    def plain(c):
        ids = tok(tok.apply_chat_template(c, tokenize=False), add_special_tokens=False, return_tensors="pt")["input_ids"]
        assert ids.shape[1] <= 1024
        with torch.no_grad():
            return float(model(input_ids=ids).logits[0, 0])

    by_plain = {uid: [plain(c) for c in convs] for uid, convs in items.items() if uid != "pairwise/11"}
    decided = 0
    for uid, rewards in by_scorer.items():
        if uid in by_plain:
            assert by_plain[uid] == pytest.approx(rewards, abs=1e-4), uid
        margin = min(rewards[0] - x for x in rewards[1:])
        if abs(margin) > 1e-4:  # outside float noise between packed and plain attention
            decided += 1
            assert r["item_hits"]["tiny"][uid] == int(margin > 0), uid
    assert decided >= 10
    for s, n in (("pairwise", 8), ("bon", 4)):
        hits = [r["item_hits"]["tiny"][u] for u in items if u.startswith(s)]
        assert r["models"]["tiny"]["sets"][s]["accuracy"] == {**r["models"]["tiny"]["sets"][s]["accuracy"],
                                                               "n": n, "accuracy": round(sum(hits) / n, 4)}
    # the long conversation lost its first exchange, and the report says so
    t = r["truncation"]["tiny"]
    assert (t["known"], t["cut"], t["first_turn_cut"], t["max_length"]) == (True, 1, 1, 1024)
    report = (tmp_path / "eval" / "rmb" / "report.md").read_text()
    assert "What each reward model could not see" in report and "1 of 12 items cut to fit 1024 tokens" in report
    assert "Skipped records are listed in" in report


def test_cli_over_the_budget_exits_non_zero_naming_the_totals(tmp_path, tiny_rm):
    proc = music_eval(tmp_path, tiny_rm, "records.max_invalid_fraction=0.01")
    assert proc.returncode != 0
    assert "4 of 16 records unusable" in proc.stderr and "records.max_invalid_fraction=0.01" in proc.stderr
    assert not (tmp_path / "eval" / "rmb" / "results.json").exists()  # no partial record
