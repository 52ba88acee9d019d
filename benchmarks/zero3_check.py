"""ZeRO-3 through accelerate + DeepSpeed against one plain process: same data, same steps, then
the two exported models score the same conversations.

    python benchmarks/zero3_check.py --make-toy .zero3     # a toy backbone and pairs (offline assets)
    python benchmarks/zero3_check.py --backbone .zero3/dec --train .zero3/d.jsonl --held .zero3/h.jsonl

Runs ``music train`` twice (fp32, so the comparison is not blurred by bf16 rounding): once as a
plain process, once under ``accelerate launch --config_file configs/deepspeed_zero3.yaml
--num_processes 1``. On a machine without CUDA DeepSpeed runs on its CPU accelerator (gloo).
Reports the held-out loss of both, and the largest difference between the exports' rewards
(through ``HFRewardScorer``, what the evaluators use). Writes results/zero3_check_<device>.json|md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]


def train(out: Path, args: argparse.Namespace, launcher: list[str]) -> tuple[dict, float]:
    keys = ["run.progress=false", f"run.output_dir={out}", f"train.train_data={args.train}", f"train.eval_data={args.held}",
            f"train.backbone={args.backbone}", "train.head=last-token", "train.precision=fp32", f"train.attention={args.attention}",
            f"train.max_steps={args.steps}", "train.batch_size=8", "train.tokens_per_micro_batch=512", "train.save_every=0"]
    t0 = time.perf_counter()
    proc = subprocess.run([*launcher, "-m", "music_core", "train", *keys], capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(launcher[:4])} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads((out / "rm" / "metrics.json").read_text()), seconds


def make_toy(folder: Path) -> None:
    """The toy backbone (a 2-layer Llama, SmolLM2's tokenizer) and pairs the check trains on,
    written here to be carried to a machine that cannot install the offline assets."""
    sys.path.insert(0, str(ROOT / "tests"))
    from bt_helpers import tiny_decoder, write_pairs

    tiny_decoder(folder / "dec", hidden=32)  # half the tests' width: the folder travels to the GPU machine
    write_pairs(folder / "d.jsonl")
    write_pairs(folder / "h.jsonl", n=8, seed=1)


def main() -> None:
    if sys.argv[1:2] == ["--make-toy"]:
        make_toy(Path(sys.argv[2]))
        return
    import torch
    from music_bt.scorer import HFRewardScorer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--held", required=True)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--attention", default="auto", help="train.attention (sdpa on a GPU skips flex attention's compile)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/zero3_check"))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    import shutil

    shutil.rmtree(args.work, ignore_errors=True)
    plain, t_plain = train(args.work / "plain", args, [sys.executable])
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "configs/deepspeed_zero3.yaml"),
              "--num_processes", "1", "--mixed_precision", "no"]
    zero3, t_zero3 = train(args.work / "zero3", args, launch)
    pairs = [json.loads(line) for line in open(args.held)]
    convs = [c for p in pairs for c in (p["chosen"], p["rejected"])]
    a = HFRewardScorer(str(args.work / "plain" / "rm")).score(convs)
    b = HFRewardScorer(str(args.work / "zero3" / "rm")).score(convs)
    diff = max(abs(x - y) for x, y in zip(a, b))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (DeepSpeed's CPU accelerator, gloo)"
    import deepspeed

    result = {"benchmark": "zero3_check", "device": device, "torch": torch.__version__, "deepspeed": deepspeed.__version__,
              "steps": args.steps, "plain_eval_loss": plain["eval_loss"], "zero3_eval_loss": zero3["eval_loss"],
              "plain_final_loss": plain["final_loss"], "zero3_final_loss": zero3["final_loss"],
              "zero3_export_form": zero3.get("export_form"), "zero3_export_check": zero3.get("export_max_abs_difference"),
              "max_reward_difference_between_exports": diff, "conversations_scored": len(convs),
              "seconds_plain": round(t_plain, 1), "seconds_zero3": round(t_zero3, 1), "date": time.strftime("%Y-%m-%d")}
    tag = "gpu" if torch.cuda.is_available() else "cpu"
    out = args.out or ROOT / "benchmarks" / "results" / f"zero3_check_{tag}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    md = [f"# ZeRO-3 (one process) against a plain run ({device})", "",
          f"`python benchmarks/zero3_check.py` with torch {torch.__version__}, DeepSpeed {deepspeed.__version__}, "
          f"{args.steps} steps, fp32.", "",
          "| | plain | ZeRO-3 |", "|---|---|---|",
          f"| held-out loss | {plain['eval_loss']:.8f} | {zero3['eval_loss']:.8f} |",
          f"| last training loss | {plain['final_loss']:.8f} | {zero3['final_loss']:.8f} |",
          f"| seconds | {t_plain:.1f} | {t_zero3:.1f} |", "",
          f"Largest reward difference between the two exports on {len(convs)} held-out conversations: **{diff:.2e}** "
          f"(export form {zero3.get('export_form')}; each export is also checked against its own trainer: "
          f"{zero3.get('export_max_abs_difference')})."]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    if diff > 1e-4:
        raise SystemExit(f"the ZeRO-3 export differs from the plain one by {diff:.2e} (> 1e-4)")


if __name__ == "__main__":
    main()
