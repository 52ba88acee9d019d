"""CPU time of the human-labelled evaluators' scoring, per 1,000 conversations, for a MiniLM and a
SmolLM2-135M reward model (their heads untrained: speed does not depend on the weights).

    python benchmarks/human_eval_cpu.py [--conversations 300]

The conversations are multi-turn, shaped like HelpSteer3's: 1-6 user turns, answers of log-normal
length (median ~60 words), scored through ``music_bt.scorer.HFRewardScorer``, the scorer every
evaluator uses (SmolLM2 packed, MiniLM padded and length-sorted). Process CPU time and wall time
are both reported (the machine is shared: CPU time is the steadier figure). Writes
benchmarks/results/human_eval_cpu.json|md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "plugins")]

RESULTS = Path(__file__).parent / "results"
WORDS = ("the plan keeps the budget you set earlier and adds a short list of options for each day of the trip "
         "with costs times and a note on what to book first").split()


def conversations(n: int, seed: int) -> list[list[dict]]:
    rng = random.Random(seed)

    def text(median: float) -> str:
        k = max(3, min(400, int(math.exp(rng.gauss(math.log(median), 0.6)))))
        return " ".join(rng.choice(WORDS) for _ in range(k))

    out = []
    for _ in range(n):
        conv: list[dict] = []
        for _ in range(rng.randint(1, 6)):
            conv += [{"role": "user", "content": text(20)}, {"role": "assistant", "content": text(60)}]
        out.append(conv)
    return out


def reward_model(backbone: str, folder: Path) -> Path:
    """An RM folder from the offline backbone: its own classification head, one label."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from music_core.models import resolve_model

    src = resolve_model(backbone)
    tok = AutoTokenizer.from_pretrained(src)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(src, num_labels=1, pad_token_id=tok.pad_token_id)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def measure(folder: Path, convs: list[list[dict]]) -> dict:
    from music_bt.scorer import HFRewardScorer

    scorer = HFRewardScorer(str(folder), batch_size=16)
    scorer.score(convs[:8])  # warm-up: kernels, tokenizer caches
    c0, w0 = time.process_time(), time.perf_counter()
    scorer.score(convs)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return {"conversations": len(convs), "cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
            "cpu_s_per_1000": round(1000 * cpu / len(convs), 1), "wall_s_per_1000": round(1000 * wall / len(convs), 1),
            "packed": bool(getattr(scorer, "packed", False))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conversations", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    convs = conversations(args.conversations, args.seed)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, backbone in (("MiniLM-L6 (22.7M, encoder)", "minilm"), ("SmolLM2-135M (decoder)", "smollm2-135m")):
            rows[name] = measure(reward_model(backbone, Path(tmp) / backbone), convs)
            print(name, rows[name], flush=True)
    result = {"benchmark": "human_eval_cpu", "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
              "user_turns": "1-6 per conversation", "models": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "human_eval_cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Human-labelled evaluators: scoring CPU time per 1,000 conversations", "",
             f"`python benchmarks/human_eval_cpu.py --conversations {args.conversations}`, {os.cpu_count()} CPUs, "
             f"{torch.get_num_threads()} torch threads; multi-turn conversations of 1-6 user turns (HelpSteer3's shape).", "",
             "| reward model | scoring | CPU s / 1,000 conversations | wall s / 1,000 | measured on |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {'packed' if r['packed'] else 'padded, length-sorted'} | {r['cpu_s_per_1000']} | "
                     f"{r['wall_s_per_1000']} | {r['conversations']} conversations |")
    (RESULTS / "human_eval_cpu.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
