"""Compare reward-model backbones and heads on the same data, and print a table.

    python examples/compare_backbones.py                  # the built-in pairs, ~10 min on 2 CPU cores
    python examples/compare_backbones.py --train my/train.jsonl --eval my/eval.jsonl --epochs 2

Every variant trains with the same data, order, steps and seed; only backbone and head change.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from music_core.config import load_config
from music_core.context import RunContext
from music_core.training_stage import train_reward_model

VARIANTS = [
    ("minilm", "cls", 1e-4),
    ("minilm", "last-token", 1e-4),
    ("minilm", "mean-pool", 1e-4),
    ("minilm", "per-turn", 1e-4),
    ("smollm2-135m", "last-token", 2e-5),
    ("smollm2-135m", "per-turn", 2e-5),
]


def builtin_split(tmp: Path) -> tuple[str, str]:
    from music_data.sources import DATA

    lines = (DATA / "pairs.jsonl").read_text().splitlines()
    random.Random(0).shuffle(lines)
    cut = int(0.7 * len(lines))
    (tmp / "train.jsonl").write_text("\n".join(lines[:cut]) + "\n")
    (tmp / "eval.jsonl").write_text("\n".join(lines[cut:]) + "\n")
    return str(tmp / "train.jsonl"), str(tmp / "eval.jsonl")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train")
    ap.add_argument("--eval")
    ap.add_argument("--epochs", type=float, default=4)
    ap.add_argument("--out", type=Path, default=Path("runs/compare_backbones"))
    ap.add_argument("--backbone", action="append", help="only these backbones (repeatable)")
    ap.add_argument("--head", action="append", help="only these heads (repeatable)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    train, held = (args.train, args.eval) if args.train else builtin_split(tmp)
    rows = []
    for backbone, head, lr in [v for v in VARIANTS if (not args.backbone or v[0] in args.backbone)
                            and (not args.head or v[1] in args.head)]:
        cfg = load_config(None, [f"run.output_dir={args.out}", "run.progress=false", f"train.backbone={backbone}",
                                 f"train.head={head}", f"train.lr={lr}", f"train.epochs={args.epochs}",
                                 f"train.train_data={train}", f"train.eval_data={held}", "train.tokens_per_micro_batch=4096"])
        t0 = time.perf_counter()
        result = train_reward_model(RunContext(cfg), name=f"{backbone}-{head}")
        m = result.metrics
        rows.append({"backbone": backbone, "head": head, "lr": lr, "held_out_accuracy": round(m["eval_accuracy"], 3),
                     "held_out_loss": round(m["eval_loss"], 4), "final_train_loss": round(m.get("final_loss", float("nan")), 4),
                     "tokens_per_s": round(m["tokens_per_s"]), "seconds": round(time.perf_counter() - t0)})
        print(json.dumps(rows[-1]), flush=True)
    cols = list(rows[0])
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "comparison.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
