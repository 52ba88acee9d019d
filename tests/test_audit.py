"""``music audit`` against a deterministic loopback OpenAI-compatible auditor whose preference is
scripted per pair and per turn, so that every figure of the report can be computed by hand."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from llm_helpers import KEY
from music_openai.testing import openai_server

from music_core.audit.report import calibration, trust

MARK = re.compile(r"(good|bad)-(\w+)-(\d)")

# (pair, turn or "whole") -> what the auditor does: prefer chosen, prefer rejected, prefer the
# first position whatever it holds, call a tie, or answer something no parser reads.
SCRIPT = {
    ("p1", "whole"): "chosen", ("p1", 1): "chosen", ("p1", 2): "chosen",
    ("p2", "whole"): "chosen", ("p2", 1): "chosen", ("p2", 2): "rejected",
    ("p3", "whole"): "first", ("p3", 1): "first", ("p3", 2): "chosen",
    ("p4", "whole"): "rejected", ("p4", 1): "rejected", ("p4", 2): "rejected",
    ("p5", "whole"): "garbage", ("p5", 1): "chosen", ("p5", 2): "tie",
    ("p6", "whole"): "chosen", ("p6", 1): "chosen", ("p6", 2): "first",
    **{(f"k{i}", "whole"): "chosen" for i in range(1, 8)}, ("k8", "whole"): "first",
}
STRATEGY = {"p1": "instruction-contrast", "p2": "instruction-contrast", "p3": "instruction-contrast",
            "p4": "forget-history", "p5": "forget-history", "p6": "forget-history"}
FALLBACK = {"p1": "none", "p2": "none", "p4": "none", "p3": "partly", "p5": "partly", "p6": "wholly"}


def blocks(prompt: str) -> tuple[str, str]:
    a = re.search(r"\[Conversation A\]\n(.*?)\n\n\[Conversation B\]", prompt, re.S)
    b = re.search(r"\[Conversation B\]\n(.*?)\n\nWhich", prompt, re.S)
    return (a.group(1) if a else ""), (b.group(1) if b else "")


def scripted_auditor(messages: list[dict], index: int, script: dict | None = None) -> str:
    script = SCRIPT if script is None else script
    per_turn = "final assistant reply" in messages[0]["content"]
    a, _ = blocks(messages[-1]["content"])
    lines = [ln for ln in a.splitlines() if ln.startswith("Assistant:")]
    side, pid, turn = MARK.findall(" ".join(lines[-1:] if per_turn else lines))[-1]
    behaviour = script.get((pid, int(turn) if per_turn else "whole"), "chosen")
    winner = {"chosen": "A" if side == "good" else "B", "rejected": "B" if side == "good" else "A",
              "first": "A", "tie": "tie"}.get(behaviour)
    if winner is None:
        return "I would rather not say."
    return json.dumps({"reasons": f"{behaviour} by script", "winner": winner})


def synthetic_pair(pid: str) -> dict:
    u1, u2 = f"Plan a trip for {pid}.", "Make it cheaper."
    chosen = [{"role": "user", "content": u1}, {"role": "assistant", "content": f"Trip plan good-{pid}-1."},
              {"role": "user", "content": u2}, {"role": "assistant", "content": f"Cheaper plan good-{pid}-2."}]
    rejected = [{"role": "user", "content": u1}, {"role": "assistant", "content": f"Trip plan bad-{pid}-1."},
                {"role": "user", "content": u2}, {"role": "assistant", "content": f"Pricier plan bad-{pid}-2."}]
    turns = [{"turn": t, "original": u, "modified": f"{u} (for a millionaire)", "contrasted": True,
              "strategy": STRATEGY[pid], "fallback_reason": None} for t, u in ((1, u1), (2, u2))]
    return {"id": pid, "chosen": chosen, "rejected": rejected, "source": "music",
            "meta": {"strategy": STRATEGY[pid], "made_by_fallback": FALLBACK[pid], "prefix_messages": 1,
                     "num_turns": 2, "turns": turns, "seed_source": "builtin" if pid in ("p1", "p2", "p3") else "skywork",
                     "endpoints": {"assistant_simulator": "openai:simulator-model"}}}


def known_pair(kid: str) -> dict:
    q = [{"role": "user", "content": f"Question {kid}?"}]
    return {"id": kid, "chosen": q + [{"role": "assistant", "content": f"Right good-{kid}-1."}],
            "rejected": q + [{"role": "assistant", "content": f"Wrong bad-{kid}-1."}]}


def write_run(root: Path) -> Path:
    pairs = root / "synth" / "pairs.jsonl"
    pairs.parent.mkdir(parents=True)
    pairs.write_text("".join(json.dumps(synthetic_pair(f"p{i}")) + "\n" for i in range(1, 7)))
    known = root / "known.jsonl"
    known.write_text("".join(json.dumps(known_pair(f"k{i}")) + "\n" for i in range(1, 9)))
    return known


def audit_args(root: Path, base_url: str, *extra: str) -> list[str]:
    return [f"run.output_dir={root}", "run.progress=false", "models.aud.provider=openai", "models.aud.model=auditor",
            f"models.aud.base_url={base_url}", "models.aud.api_key_env=TEST_KEY", "models.aud.retry_backoff_s=0.01",
            "roles.auditor=aud", "audit.judge_options.verdict=text", "audit.turn_judge_options.verdict=text",
            f"audit.known_pairs={root / 'known.jsonl'}", *extra]


def music(*args: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "TEST_KEY": KEY, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "music_core", *args], env=env, capture_output=True, text=True, **kw)


def figures(root: Path) -> dict:
    return json.loads((root / "audit" / "report.json").read_text())


def test_audit_figures_equal_the_hand_computed_ones_and_a_rerun_pays_nothing(tmp_path):
    write_run(tmp_path)
    with openai_server(reply=scripted_auditor, seeded=True) as srv:
        out = music("audit", *audit_args(tmp_path, srv.url + "/v1"))
        assert out.returncode == 0, out.stderr[-3000:]
        first_calls = len(srv.requests)
        r = figures(tmp_path)
        records = (tmp_path / "audit" / "audit.jsonl").read_text()
        rerun = music("audit", *audit_args(tmp_path, srv.url + "/v1"))
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert len(srv.requests) == first_calls  # 0 wire calls
    assert figures(tmp_path)["wire_calls_this_run"] == 0 and r["wire_calls_this_run"] == first_calls
    assert (tmp_path / "audit" / "audit.jsonl").read_text() == records

    v = r["validity"]
    assert (v["k"], v["n"]) == (3, 6)  # p1, p2, p6 prefer chosen in both orders
    assert v["counts"] == {"valid": 3, "invalid": 1, "flip": 1, "tie": 0, "unparsed": 1}
    assert v["flip_rate"] == round(1 / 6, 4)
    lo, hi = v["ci95"]
    assert lo == pytest.approx(0.1876, abs=1e-3) and hi == pytest.approx(0.8124, abs=1e-3)  # Wilson, 3 of 6
    by_turn = {row["value"]: row for row in r["by_turn"]}
    assert (by_turn[1]["k"], by_turn[1]["n"]) == (4, 6) and (by_turn[2]["k"], by_turn[2]["n"]) == (2, 6)
    assert by_turn[2]["counts"] == {"valid": 2, "invalid": 2, "flip": 1, "tie": 1, "unparsed": 0}
    assert (r["turns"]["k"], r["turns"]["judged"]) == (6, 12)
    by_strategy = {row["value"]: (row["k"], row["n"]) for row in r["by_strategy"]}
    assert by_strategy == {"instruction-contrast": (2, 3), "forget-history": (1, 3)}
    by_fallback = {row["value"]: (row["k"], row["n"]) for row in r["by_fallback"]}
    assert by_fallback == {"none": (2, 3), "partly": (0, 2), "wholly": (1, 1)}
    assert {row["value"]: (row["k"], row["n"]) for row in r["by_seed_source"]} == {"builtin": (2, 3), "skywork": (1, 3)}
    assert [(row["value"], row["k"], row["n"]) for row in r["by_num_turns"]] == [("2", 3, 6)]
    assert [q["id"] for q in r["least_valid"]][:2] == ["p4", "p3"]  # rejected in both orders, then the flip

    cal = r["calibration"]
    assert (cal["accuracy"]["k"], cal["accuracy"]["n"]) == (7, 8)
    assert (cal["chosen_shown_first"]["k"], cal["chosen_shown_second"]["k"]) == (8, 7)  # k8 always says "A"
    assert cal["tells_apart"] and cal["p_value"] == pytest.approx(1 / 128, abs=1e-6)
    assert "tells known pairs apart" in r["trust"]
    md = (tmp_path / "audit" / "report.md").read_text()
    assert "3 of 6" in md and "50.0% [18.8%, 81.2%]" in md and "p4" in md
    # the auditor is not the simulator that wrote the pairs: no self-preference warning
    assert not any("its own answers" in w for w in r["warnings"])


def test_an_auditor_that_cannot_tell_known_pairs_apart_is_said_to_be_useless():
    known = [{"verdict": v, "first_prefers": f, "second_prefers": s} for v, f, s in
             [("flip", "chosen", "rejected")] * 5 + [("valid", "chosen", "chosen"), ("invalid", "rejected", "rejected")]]
    cal = calibration({"known_records": known, "known_where": "k.jsonl", "calibration_skipped": None})
    assert not cal["tells_apart"] and cal["chosen_shown_first"]["k"] == 6 and cal["chosen_shown_second"]["k"] == 1
    words = trust({"rate": 0.4, "k": 4, "n": 10, "ci95": (0.1, 0.7)}, cal)
    assert "cannot tell known pairs apart" in words and "says nothing" in words
    skipped = trust({"rate": 0.4}, calibration({"known_records": [], "calibration_skipped": "no file",
                                                "known_where": None}))
    assert "Not calibrated" in skipped and "no file" in skipped


def test_the_mix_drops_exactly_the_pairs_the_audit_rejects(tmp_path):
    write_run(tmp_path)
    with openai_server(reply=scripted_auditor, seeded=True) as srv:
        assert music("audit", *audit_args(tmp_path, srv.url + "/v1")).returncode == 0
    out = music("mix", f"run.output_dir={tmp_path}", "run.progress=false", "mix.audit.min_p=0.75")
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "mix" / "summary.json").read_text())
    # P(chosen better): p1, p2, p6 1.0; p3 (flip) 0.5; p4 0.0; p5 unreadable
    assert summary["audit"] == {"min_p": 0.75, "audit": str(tmp_path / "audit" / "audit.jsonl"), "kept": 3,
                                "dropped": 3, "dropped_unreadable": 1}
    ids = {json.loads(line)["id"] for name in ("train", "eval") for line in (tmp_path / "mix" / f"{name}.jsonl").open()}
    assert {i for i in ids if i.startswith("p")} == {"p1", "p2", "p6"}
    assert summary["train"]["synthetic"] + summary["eval"]["synthetic"] == 3


def test_the_mix_refuses_to_act_on_a_missing_audit(tmp_path):
    write_run(tmp_path)
    out = music("mix", f"run.output_dir={tmp_path}", "run.progress=false", "mix.audit.min_p=0.5")
    assert out.returncode == 2 and "mix.audit.min_p" in out.stderr and "music audit" in out.stderr
    assert not (tmp_path / "mix").exists()


def test_sigkill_mid_audit_then_rerun_gives_the_same_results(tmp_path):
    for name in ("ref", "run"):
        write_run(tmp_path / name)
    with openai_server(reply=scripted_auditor, seeded=True) as srv:
        assert music("audit", *audit_args(tmp_path / "ref", srv.url + "/v1")).returncode == 0
    with openai_server(reply=scripted_auditor, seeded=True, latency_s=0.15) as srv:
        env = {**os.environ, "TEST_KEY": KEY, "HF_HUB_OFFLINE": "1"}
        cmd = [sys.executable, "-m", "music_core", "audit", *audit_args(tmp_path / "run", srv.url + "/v1"),
               "audit.concurrency=2"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        records = tmp_path / "run" / "audit" / "audit.jsonl"
        deadline = time.time() + 60
        while time.time() < deadline and not (records.exists() and records.read_text().count("\n") >= 2):
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kept = records.read_text().count("\n")
        assert 2 <= kept < 6, "the kill must land mid-audit"
        out = music("audit", *audit_args(tmp_path / "run", srv.url + "/v1"))
        assert out.returncode == 0, out.stderr[-3000:]
    for name in ("audit.jsonl", "calibration.jsonl"):
        assert (tmp_path / "run" / "audit" / name).read_text() == (tmp_path / "ref" / "audit" / name).read_text()
    ref, run = figures(tmp_path / "ref"), figures(tmp_path / "run")
    for key in ("validity", "by_turn", "by_strategy", "least_valid"):
        assert run[key] == ref[key]
    assert {**run["calibration"], "source": ""} == {**ref["calibration"], "source": ""}  # the folders differ


def test_an_auditor_that_never_gives_a_readable_verdict_stops_the_run_with_nothing_recorded(tmp_path):
    write_run(tmp_path)
    with openai_server(reply=lambda messages, index: "Both are fine, really.", seeded=True) as srv:
        out = music("audit", *audit_args(tmp_path, srv.url + "/v1", "audit.unreadable_stop=4"))
    assert out.returncode == 5, out.stderr[-2000:]
    assert "auditor endpoint 'aud'" in out.stderr and "no readable verdict" in out.stderr
    records = tmp_path / "audit" / "audit.jsonl"
    assert not records.exists() or records.read_text() == ""


def test_bad_pairs_files_are_named(tmp_path):
    write_run(tmp_path)
    broken = tmp_path / "synth" / "pairs.jsonl"
    broken.write_text(json.dumps(synthetic_pair("p1")) + "\n{not json\n")
    out = music("audit", f"run.output_dir={tmp_path}", "run.progress=false")
    assert out.returncode == 3 and f"{broken}:2" in out.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    out = music("audit", "--pairs", str(empty), f"run.output_dir={tmp_path}", "run.progress=false")
    assert out.returncode == 3 and str(empty) in out.stderr and "no preference pairs" in out.stderr
    out = music("audit", f"run.output_dir={tmp_path / 'nothing'}", "run.progress=false")
    assert out.returncode != 0 and "no synthetic pairs to audit" in out.stderr
    assert not (tmp_path / "audit").exists() and not (tmp_path / "nothing" / "audit").exists()


def test_audit_of_any_preference_file_skips_calibration_unless_given_known_pairs(tmp_path):
    write_run(tmp_path)
    trl = tmp_path / "plain.jsonl"  # TRL's layout, no MUSIC provenance: whole conversations and turns that differ
    trl.write_text("".join(json.dumps({"chosen": p["chosen"], "rejected": p["rejected"]}) + "\n"
                           for p in (synthetic_pair("p1"), synthetic_pair("p4"))))
    with openai_server(reply=scripted_auditor, seeded=True) as srv:
        args = [a for a in audit_args(tmp_path, srv.url + "/v1") if not a.startswith("audit.known_pairs")]
        out = music("audit", "--pairs", str(trl), *args)
        assert out.returncode == 0, out.stderr[-3000:]
        r = figures(tmp_path)
        assert r["pairs"] == 2 and (r["validity"]["k"], r["turns"]["judged"]) == (1, 4)
        assert "skipped" in r["calibration"] and "Not calibrated" in r["trust"]
        out = music("audit", "--pairs", str(trl), "--known", str(tmp_path / "known.jsonl"), *args)
        assert out.returncode == 0 and figures(tmp_path)["calibration"]["known_pairs"] == 8


def test_dry_run_prices_the_audit_and_calls_nothing(tmp_path):
    write_run(tmp_path)
    with openai_server(reply=scripted_auditor, seeded=True) as srv:
        args = audit_args(tmp_path, srv.url + "/v1", "models.aud.price_input_per_mtok=3.0",
                          "models.aud.price_output_per_mtok=15.0")
        out = music("audit", "--dry-run", *args)
        assert out.returncode == 0, out.stderr
        assert "6 pairs" in out.stdout and "12 contrasted turns" in out.stdout and "8 known pairs" in out.stdout
        assert "52 calls" in out.stdout  # 2 orders x (6 pairs + 12 turns + 8 known)
        row = next(line for line in out.stdout.splitlines() if line.strip().startswith("auditor"))
        assert float(row.split()[-1]) > 0
        plan = music("run", "--dry-run", *args)
        assert plan.returncode == 0 and "audit:" in plan.stdout
        assert any(line.strip().startswith("auditor") for line in plan.stdout.splitlines())
        assert not srv.requests


def test_batch_mode_gives_the_online_verdicts_and_progress_shows_without_a_terminal(tmp_path):
    for name in ("online", "batch"):
        write_run(tmp_path / name)
    with openai_server(reply=scripted_auditor, seeded=True) as srv:
        assert music("audit", *audit_args(tmp_path / "online", srv.url + "/v1")).returncode == 0
    with openai_server(reply=scripted_auditor, seeded=True, batch={"complete_after_s": 0.05}) as srv:
        out = music("audit", *audit_args(tmp_path / "batch", srv.url + "/v1"), "models.aud.mode=batch",
                    "models.aud.batch_linger_s=0.1", "models.aud.batch_poll_s=0.05", "models.aud.batch_poll_max_s=0.1",
                    "run.progress=true", "run.progress_interval_s=0.2")
        assert out.returncode == 0, out.stderr[-3000:]
        assert srv.batch_jobs.jobs, "the audit went through the Batch API"
    assert "[audit]" in out.stderr  # progress lines, though stderr is no terminal

    def verdicts(root: Path) -> list:
        rows = [json.loads(line) for line in (root / "audit" / "audit.jsonl").open()]
        return [(r["id"], r["verdict"], r["p_chosen"], [(t["turn"], t["verdict"]) for t in r["turns"]]) for r in rows]

    assert verdicts(tmp_path / "batch") == verdicts(tmp_path / "online")
    assert figures(tmp_path / "batch")["validity"] == figures(tmp_path / "online")["validity"]


def label(pid: str, who: str, preferred_side: str) -> dict:
    from music_core.audit.labels import shown_order

    order = shown_order(pid, who)
    verdict = {order[0]: "first", order[1]: "second"}.get(preferred_side, preferred_side)
    return {"pair_id": pid, "labeller": who, "shown_order": order, "verdict": verdict, "preferred": preferred_side,
            "note": "", "time": "2026-12-01T00:00:00+00:00"}


def test_agreement_of_human_labels_equals_the_hand_computed_figures():
    from music_core.audit.agreement import human_agreement

    labels = [label("p1", "ann", "chosen"), label("p1", "bob", "chosen"), label("p2", "ann", "tie"),
              label("p2", "ann", "rejected"),  # a relabel supersedes the tie
              label("p3", "ann", "tie"), label("p4", "ann", "invalid"), label("p5", "ann", "chosen"),
              label("p5", "bob", "rejected")]
    auditor = {"p1": "chosen", "p2": "chosen", "p3": "tie", "p4": "rejected", "p5": None}
    rm = {"x": {"p1": "chosen", "p2": "rejected", "p3": "chosen", "p4": "chosen", "p5": "chosen"}}
    h = human_agreement(labels, auditor, rm)
    assert (h["labelled_pairs"], h["labellers"]) == (5, ["ann", "bob"])
    pick = lambda c, k: (c[k]["agree"], c[k]["total"])  # noqa: E731
    assert pick(h["vs_pair_label"], "with_ties") == (3, 7) and pick(h["vs_pair_label"], "without_ties") == (3, 5)
    assert h["vs_pair_label"]["kappa"] is None  # the pair label never varies
    assert pick(h["vs_auditor"], "with_ties") == (3, 5) and pick(h["vs_auditor"], "without_ties") == (2, 3)
    assert h["vs_auditor"]["kappa"] == pytest.approx(0.375)
    assert pick(h["vs_rm"]["x"], "with_ties") == (4, 7) and pick(h["vs_rm"]["x"], "without_ties") == (4, 5)
    assert pick(h["human_vs_human"], "with_ties") == (1, 2) and pick(h["human_vs_human"], "without_ties") == (1, 2)
    lo, hi = h["vs_auditor"]["kappa_ci95"]
    assert lo <= 0.375 <= hi


def test_a_labels_file_cut_by_a_kill_loses_only_its_last_line_and_the_audit_reports_agreement(tmp_path):
    from music_core.audit.labels import LabelLog, read_labels

    write_run(tmp_path)
    labels = tmp_path / "synth" / "labels.jsonl"
    labels.write_text("".join(json.dumps(label(p, "ann", "chosen")) + "\n" for p in ("p1", "p2", "p3"))
                      + json.dumps(label("p4", "ann", "chosen"))[:40])  # torn by a kill mid-write
    rows, warnings = read_labels(labels)
    assert [r["pair_id"] for r in rows] == ["p1", "p2", "p3"] and "last line was cut" in warnings[0]
    log = LabelLog(labels)  # cuts the torn tail, keeps the rest, appends after it
    log.append("p4", "ann", "second", ["rejected", "chosen"])
    assert [r["pair_id"] for r in read_labels(labels)[0]] == ["p1", "p2", "p3", "p4"]
    assert read_labels(labels)[0][-1]["preferred"] == "chosen"
    with openai_server(reply=scripted_auditor, seeded=True) as srv:
        out = music("audit", *audit_args(tmp_path, srv.url + "/v1"))
    assert out.returncode == 0, out.stderr[-2000:]
    h = figures(tmp_path)["human"]
    # p1, p2 valid (auditor: chosen); p3 a flip (tie); p4 invalid (rejected); humans said chosen throughout
    assert (h["vs_auditor"]["with_ties"]["agree"], h["vs_auditor"]["with_ties"]["total"]) == (2, 4)
    assert (h["vs_pair_label"]["with_ties"]["agree"], h["vs_pair_label"]["with_ties"]["total"]) == (4, 4)
    assert "**Human labels**" in (tmp_path / "audit" / "report.md").read_text()
