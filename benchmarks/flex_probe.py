"""music_flex on a GPU: is it exact, and which Triton block sizes run at Gemma-2's head_dim 256?

    python benchmarks/flex_probe.py --out benchmarks/results/flex_probe_h100

1. Exactness with gradients (flex attention has no CPU backward, so the test suite checks only
   the forward): a small Gemma-2 (soft-capping, a sliding window shorter than the sequences),
   packed through music_flex against padded through the model's eager attention, fp32.
2. Kernel options: forward + backward of one packed 16k-token row at Gemma-2-2B's attention
   shape (8 query heads, 4 KV heads, head_dim 256, cap 50, bf16), for torch's default block sizes
   and smaller ones; failures are printed whole. The per-sequence eager path (music_varlen's
   fallback for soft-capped models) is timed on the same row for comparison.
Prints ``BEST_KERNEL_OPTIONS=<json or default>`` for benchmarks/gpu_check.sh.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "plugins")]

from music_bt import flex  # noqa: E402

CANDIDATES = {
    "default": None,
    "64x64/bwd32-64": {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_M1": 32, "BLOCK_N1": 64, "BLOCK_M2": 64, "BLOCK_N2": 32},
    "64x32/bwd32/1stage": {"BLOCK_M": 64, "BLOCK_N": 32, "BLOCK_M1": 32, "BLOCK_N1": 32, "BLOCK_M2": 32,
                           "BLOCK_N2": 32, "num_stages": 1},
}


def exactness(device: str) -> dict:
    from music_bt.batching import PairExample, packed, padded
    from music_bt.encoding import Encoded
    from music_bt.heads import LastTokenHead
    from music_bt.model import reward_net
    from transformers import AutoModel, Gemma2Config

    flex.register()
    rng = random.Random(0)
    cfg = Gemma2Config(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=32, sliding_window=32, attn_logit_softcapping=5.0,
                       query_pre_attn_scalar=32, pad_token_id=0)
    pairs = []
    for i in range(6):
        lc, lr = rng.randrange(20, 120), rng.randrange(20, 120)
        pairs.append(PairExample(i, Encoded([rng.randrange(3, 512) for _ in range(lc)], [lc - 1]),
                                 Encoded([rng.randrange(3, 512) for _ in range(lr)], [lr - 1])))
    nets = {}
    for impl in ("eager", flex.NAME):
        c = Gemma2Config.from_dict(cfg.to_dict())
        c._attn_implementation = impl
        torch.manual_seed(0)
        with torch.device(device):
            backbone = AutoModel.from_config(c, dtype=torch.float32)
        head = LastTokenHead()
        nets[impl] = reward_net(backbone, head, head.build(cfg.hidden_size).to(device)).train()
    ref = nets["eager"](padded(pairs, pad_id=0).to(device))
    got = nets[flex.NAME](packed(pairs).to(device))
    ref.sum().backward()
    got.sum().backward()
    grad_diff = max((a.grad - b.grad).abs().max().item()
                    for a, b in zip(nets["eager"].parameters(), nets[flex.NAME].parameters()))
    return {"max_abs_reward_diff": (got - ref).abs().max().item(), "max_abs_grad_diff": grad_diff}


def packed_row(total: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    lengths = []
    while sum(lengths) < total:
        lengths.append(max(16, min(4096, int(math.exp(rng.gauss(math.log(1200), 0.6))))))
    lengths[-1] -= sum(lengths) - total
    return [n for n in lengths if n > 0]


def time_fn(fn, iters: int = 5) -> float:
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters * 1e3


def kernel_sweep(total: int) -> tuple[list[dict], list[int]]:
    from music_bt.varlen import _eager
    from torch.nn.attention.flex_attention import flex_attention

    lengths = packed_row(total)
    cu = torch.tensor([0] + list(torch.tensor(lengths).cumsum(0)), dtype=torch.int32, device="cuda")
    mask = flex.block_masks(cu, total, {None})[None]
    torch.manual_seed(0)
    q = torch.randn(1, 8, total, 256, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(1, 4, total, 256, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(1, 4, total, 256, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    scale = 256 ** -0.5

    def cap(score, b, h, qi, kv):
        return 50.0 * torch.tanh(score / 50.0)

    rows = []
    compiled = torch.compile(flex_attention)
    for name, options in CANDIDATES.items():
        def step(options=options):
            out = compiled(q, k, v, score_mod=cap, block_mask=mask, scale=scale, enable_gqa=True, kernel_options=options)
            out.sum().backward()
        try:
            t0 = time.perf_counter()
            step()
            torch.cuda.synchronize()
            rows.append({"kernel": name, "options": options, "compile_s": round(time.perf_counter() - t0, 1),
                         "fwd_bwd_ms": round(time_fn(step), 2)})
        except Exception as exc:  # noqa: BLE001 - the point is to see every failure whole
            traceback.print_exc()
            rows.append({"kernel": name, "options": options, "error": f"{type(exc).__name__}: {str(exc)[:800]}"})
        print(json.dumps(rows[-1]), flush=True)

    def eager_step():
        outs, bounds = [], cu.tolist()
        for s, e in zip(bounds[:-1], bounds[1:]):
            outs.append(_eager(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], 2, scale, 50.0, None, 0.0))
        torch.cat(outs, dim=2).sum().backward()
    try:
        rows.append({"kernel": "per-sequence eager (music_varlen)", "fwd_bwd_ms": round(time_fn(eager_step), 2)})
    except Exception as exc:  # noqa: BLE001
        rows.append({"kernel": "per-sequence eager (music_varlen)", "error": f"{type(exc).__name__}: {exc}"[:800]})
    print(json.dumps(rows[-1]), flush=True)
    return rows, lengths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--exactness-only", action="store_true")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "flex_probe")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("flex_probe needs a CUDA GPU (flex attention's backward does not run on CPU)")
    result: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    try:
        result["exactness"] = exactness("cuda")
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        result["exactness"] = {"error": f"{type(exc).__name__}: {str(exc)[:800]}"}
    print(json.dumps(result["exactness"]), flush=True)
    if args.exactness_only:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        return
    result["kernels"], lengths = kernel_sweep(args.tokens)
    result["row"] = {"tokens": args.tokens, "sequences": len(lengths), "heads": "8 q / 4 kv", "head_dim": 256}
    working = [r for r in result["kernels"] if "fwd_bwd_ms" in r and "options" in r]
    best = min(working, key=lambda r: r["fwd_bwd_ms"]) if working else None
    result["best"] = best["kernel"] if best else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    print("BEST_KERNEL_OPTIONS=" + ("none" if not best else "default" if best["options"] is None
                                    else json.dumps(best["options"], separators=(",", ":"))))


if __name__ == "__main__":
    main()
