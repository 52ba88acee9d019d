"""Packed Bradley-Terry training vs the plain padded recipe, on the same data, in one run.

    python benchmarks/train_throughput.py                       # CPU: a small decoder
    python benchmarks/train_throughput.py --preset gemma2-2b    # GPU: Gemma-2-2B shape, random weights

Data: pairs of multi-turn conversations with log-normal lengths (median ~1200 tokens, capped
at 4096; chosen and rejected lengths drawn independently). Both variants see the same pairs in
the same order and take the same optimizer steps (AdamW, same batch of pairs per step):

- packed (music): chosen and rejected sequences packed into token-budgeted rows with restarted
  position ids, so attention is block-diagonal and nothing is padded;
- padded (the usual HF recipe, as TRL's RewardTrainer does it): an AutoModelForSequenceClassification
  whose batches pad chosen and rejected to the longest sequence in the batch.

Reports real (non-pad) tokens/s, padding waste, peak memory, and on GPU the model-FLOPs
utilisation against a measured bf16 matmul ceiling. Writes benchmarks/results/train_throughput*.json|md.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "plugins")]

from music_bt.batching import PairExample, group_by_tokens, packed  # noqa: E402
from music_bt.encoding import Encoded  # noqa: E402
from music_bt.heads import LastTokenHead  # noqa: E402
from music_bt.loop import pair_loss  # noqa: E402
from music_bt.model import reward_net  # noqa: E402

RESULTS = Path(__file__).parent / "results"
WARMUP = 2  # flex attention compiles once for the first shape and once more with dynamic shapes (--warmup)
PRESETS = {
    # Gemma-2-9B(-Instruct)'s shape: the paper's reward-model backbone
    "gemma2-9b": dict(arch="gemma2", vocab_size=256000, hidden_size=3584, intermediate_size=14336, num_hidden_layers=42,
                      num_attention_heads=16, num_key_value_heads=8, head_dim=256, sliding_window=4096,
                      attn_logit_softcapping=50.0, final_logit_softcapping=30.0, query_pre_attn_scalar=256),
    # a small decoder for a 2-core CPU (SmolLM2's vocabulary and layout, fewer and narrower layers)
    "cpu-small": dict(arch="llama", vocab_size=49152, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=64),
    # Gemma-2-2B's shape (random weights: no download is possible on the GPU machine)
    "gemma2-2b": dict(arch="gemma2", vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                      num_attention_heads=8, num_key_value_heads=4, head_dim=256, sliding_window=4096,
                      attn_logit_softcapping=50.0, final_logit_softcapping=30.0, query_pre_attn_scalar=256),
    "tiny-gemma2": dict(arch="gemma2", vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=256,
                        attn_logit_softcapping=50.0, final_logit_softcapping=30.0, query_pre_attn_scalar=16),
    "tiny": dict(arch="llama", vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=16),
}


def make_config(preset: str, attn: str):  # noqa: D103
    from transformers import Gemma2Config, LlamaConfig

    p = dict(PRESETS[preset])
    arch = p.pop("arch")
    cls = Gemma2Config if arch == "gemma2" else LlamaConfig
    cfg = cls(max_position_embeddings=8192, pad_token_id=0, bos_token_id=1, eos_token_id=2, **p)
    cfg._attn_implementation = attn
    return cfg


def make_pairs(n: int, median: float, cap: int, vocab: int, seed: int) -> list[PairExample]:
    rng = random.Random(seed)
    sigma = 0.6

    def length() -> int:
        return max(16, min(cap, int(math.exp(rng.gauss(math.log(median), sigma)))))

    pairs = []
    for i in range(n):
        shared = [rng.randrange(3, vocab) for _ in range(8)]
        lc, lr = length(), length()
        c = shared + [rng.randrange(3, vocab) for _ in range(lc - 8)]
        r = shared + [rng.randrange(3, vocab) for _ in range(lr - 8)]
        pairs.append(PairExample(i, Encoded(c, [lc - 1]), Encoded(r, [lr - 1])))
    return pairs


def flops_per_sequence(cfg, t: int) -> float:
    """Useful training FLOPs (forward + backward) for t real tokens: 6 x non-embedding params per
    token, plus causal attention 6 x layers x (heads x head_dim) x T^2."""
    d_attn = cfg.num_attention_heads * cfg.head_dim
    n_layer_params = cfg.num_hidden_layers * (
        cfg.hidden_size * d_attn * 2 + cfg.hidden_size * cfg.num_key_value_heads * cfg.head_dim * 2
        + 3 * cfg.hidden_size * cfg.intermediate_size)
    return 6 * n_layer_params * t + 6 * cfg.num_hidden_layers * d_attn * t * t


def flops_per_pair(cfg, p: PairExample) -> float:
    return flops_per_sequence(cfg, len(p.chosen.ids)) + flops_per_sequence(cfg, len(p.rejected.ids))


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_packed(cfg, pairs, steps, batch_pairs, budget, device, dtype, checkpointing, packed_attn, compile_layers,
               optimizer="adamw", lora=0, qlora=False, fixed_rows=False) -> dict:
    from transformers import AutoModel

    torch.manual_seed(0)
    cfg = type(cfg).from_dict(cfg.to_dict())
    cfg._attn_implementation = packed_attn
    if packed_attn in ("music_varlen", "music_flex"):  # registered by the trainer's own chooser
        from music_bt.model import attention_impl

        attention_impl(cfg, packed_attn.removeprefix("music_"))
    with torch.device(device):  # initialise on the device: a 2.6B model initialised on CPU takes minutes
        backbone = AutoModel.from_config(cfg, dtype=dtype)
    if qlora:  # as train.lora.quantize_4bit: NF4 layers, then peft's k-bit preparation (it sets up checkpointing)
        from peft import prepare_model_for_kbit_training

        four_bit = quantize_linears_4bit(backbone, dtype, device)
        print(f"[packed] {four_bit} linear layers hold NF4 weights", file=sys.stderr, flush=True)
        backbone = prepare_model_for_kbit_training(backbone, use_gradient_checkpointing=checkpointing,
                                                   gradient_checkpointing_kwargs={"use_reentrant": False})
    elif checkpointing:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if compile_layers and not qlora:  # the trainer compiles no 4-bit model either
        from music_bt.model import compile_each_layer

        compile_each_layer(backbone)
    if lora:
        backbone = with_lora(backbone, lora)
    head = LastTokenHead()
    net = reward_net(backbone, head, head.build(cfg.hidden_size).to(device)).train()
    opt = make_optimizer(net, optimizer, device)
    row = budget if fixed_rows else 0  # train.fixed_row_shape: every micro-batch one shape
    return _loop("packed", net, opt, pairs, steps, batch_pairs, device,
                 lambda ps: [packed(g, row) for g in group_by_tokens(ps, budget, padded=False)],
                 lambda mb: net(mb))


def quantize_linears_4bit(model, compute_dtype, device) -> int:
    """The NF4 layers (double quantisation) that from_pretrained with train.lora.quantize_4bit's
    BitsAndBytesConfig makes, built in memory from the random weights: the GPU machine has no
    checkpoint to load, and writing 18 GB to load it back would cost the device time."""
    import bitsandbytes as bnb

    n = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear:
                q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                      compute_dtype=compute_dtype, compress_statistics=True, quant_type="nf4", device="meta")
                q.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, compress_statistics=True,
                                             quant_type="nf4", module=q)
                if child.bias is not None:
                    q.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
                setattr(parent, name, q.to(device))  # moving a Params4bit quantises it
                n += 1
    return n


def run_padded(cfg, pairs, steps, batch_pairs, budget, device, dtype, checkpointing, padded_attn,
               optimizer="adamw", lora=0, length_sorted=False) -> dict:
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    cfg = type(cfg).from_dict({**cfg.to_dict(), "num_labels": 1})
    cfg._attn_implementation = padded_attn
    with torch.device(device):
        model = AutoModelForSequenceClassification.from_config(cfg, dtype=dtype).train()
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora:
        model = with_lora(model, lora, task_type="SEQ_CLS")
    opt = make_optimizer(model, optimizer, device)

    def batches(ps):
        # the recipe: a fixed number of pairs per forward, chosen and rejected padded to the
        # longest in it; as many pairs per forward as the packed budget holds at the cap
        per = max(1, budget // (2 * max(len(p.chosen.ids) for p in pairs)))
        if length_sorted:  # the recipe's best case: similar lengths share a batch, less padding
            ps = sorted(ps, key=lambda p: max(len(p.chosen.ids), len(p.rejected.ids)))
        out = []
        for k in range(0, len(ps), per):
            group = ps[k:k + per]
            seqs = [e.ids for p in group for e in (p.chosen, p.rejected)]
            width = max(len(s) for s in seqs)
            ids = torch.zeros((len(seqs), width), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, s in enumerate(seqs):
                ids[i, : len(s)] = torch.tensor(s)
                mask[i, : len(s)] = 1
            out.append((group, ids, mask, sum(map(len, seqs)), ids.numel()))
        return out

    def forward(mb):
        group, ids, mask, _, _ = mb
        return model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, 0]

    return _loop("padded", model, opt, pairs, steps, batch_pairs, device, batches, forward)


def with_lora(model, r: int, task_type: str | None = None):
    """LoRA on every linear layer (rank r, alpha 2r), as train.lora does."""
    from peft import LoraConfig, get_peft_model

    kw = {"task_type": task_type} if task_type else {}
    return get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", **kw))


def make_optimizer(model, name: str, device: str):
    """The trainer's own optimizer choice (train.optimizer), fused AdamW on GPU."""
    from music_bt.optim import build_optimizer

    params = [p for p in model.parameters() if p.requires_grad]
    return build_optimizer(name, [{"params": params, "weight_decay": 0.0}], 1e-5, fused=device == "cuda" and name == "adamw")


def _loop(name, model, opt, pairs, steps, batch_pairs, device, make_batches, forward) -> dict:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, real, computed, used_pairs = [], 0, 0, []
    for step in range(steps + WARMUP):  # warm-up steps compile kernels and fill the allocator, untimed
        ps = pairs[step * batch_pairs:(step + 1) * batch_pairs]
        sync()
        t0 = time.perf_counter()
        mbs = make_batches(ps)
        for mb in mbs:
            if hasattr(mb, "to"):
                mb.to(device)  # packed micro-batches are built on the CPU
            with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
                r = forward(mb)
            group = mb.pairs if hasattr(mb, "pairs") else mb[0]
            loss, _, _ = pair_loss(r, torch.zeros(len(group), device=r.device), None)
            (loss.sum() / len(ps)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        print(f"[{name}] step {step + 1}/{steps + WARMUP}{' (warm-up)' if step < WARMUP else ''}: "
              f"{time.perf_counter() - t0:.2f} s, {len(mbs)} micro-batches", file=sys.stderr, flush=True)
        if step >= WARMUP:
            times.append(time.perf_counter() - t0)
            for mb in mbs:
                real += mb.real_tokens if hasattr(mb, "real_tokens") else mb[3]
                computed += mb.computed_tokens if hasattr(mb, "computed_tokens") else mb[4]
            used_pairs += ps
    elapsed = sum(times)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else _rss_gib()
    row = {"variant": name, "steps": steps, "seconds": round(elapsed, 3), "real_tokens": real,
           "real_tokens_per_s": round(real / elapsed, 1), "padding_waste": round(1 - real / max(1, computed), 4),
           "peak_memory_gib": round(peak, 2), "_pairs": used_pairs, "_elapsed": elapsed}
    if device == "cuda":
        row["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
    return row


def _rss_gib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def matmul_ceiling_tflops() -> float:
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync()
    t0 = time.perf_counter()
    for _ in range(10):
        a @ b
    sync()
    return 2 * 8192**3 * 10 / (time.perf_counter() - t0) / 1e12


def planned_gib(cfg, args, dtype) -> float:
    """What the --dry-run memory planner (music_bt.memory) predicts for this packed run."""
    from music_bt.memory import count, estimate

    c = count(cfg, args.lora or 16, ["all-linear"])
    gib, _ = estimate(c, param_dtype="bf16" if dtype == torch.bfloat16 else "fp32", optimizer=args.optimizer,
                      lora=bool(args.lora), quantize_4bit=args.qlora, checkpointing=args.checkpointing, tokens=args.budget)
    return round(gib, 2)


def main() -> None:
    global WARMUP
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu-small", choices=sorted(PRESETS))
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch-pairs", type=int, default=8)
    ap.add_argument("--budget", type=int, default=8192, help="tokens per packed micro-batch")
    ap.add_argument("--median", type=float, default=1200)
    ap.add_argument("--cap", type=int, default=4096)
    ap.add_argument("--packed-attn", default=None, help="packed attention (default: music_varlen on CPU, music_flex on GPU)")
    ap.add_argument("--padded-attn", default=None, help="the padded recipe's attention (default: sdpa; eager for models "
                    "with soft-capping, which sdpa refuses: HF's advice for Gemma-2 without flash-attn)")
    ap.add_argument("--checkpointing", action="store_true")
    ap.add_argument("--compile", action="store_true", help="packed: torch.compile each transformer layer (train.compile)")
    ap.add_argument("--only", choices=["packed", "padded"], default=None)
    ap.add_argument("--optimizer", default="adamw", help="adamw, adamw_8bit or adafactor (train.optimizer)")
    ap.add_argument("--lora", type=int, default=0, help="LoRA rank on every linear layer (0: full fine-tune)")
    ap.add_argument("--qlora", action="store_true", help="with --lora: the backbone's linear layers in NF4 (train.lora.quantize_4bit)")
    ap.add_argument("--fixed-rows", action="store_true", help="packed: fill every micro-batch to --budget (train.fixed_row_shape)")
    ap.add_argument("--length-sorted", action="store_true", help="padded: sort each step's pairs by length")
    ap.add_argument("--warmup", type=int, default=WARMUP, help="untimed first steps (compilation)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    WARMUP = args.warmup
    if args.qlora and not args.lora:
        ap.error("--qlora trains adapters on a 4-bit backbone: give --lora R too")
    variant_name = f"{'QLoRA' if args.qlora else 'LoRA'} r={args.lora}"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    cfg = make_config(args.preset, "sdpa")
    packed_attn = args.packed_attn or ("music_flex" if device == "cuda" else "music_varlen")
    padded_attn = args.padded_attn or ("eager" if getattr(cfg, "attn_logit_softcapping", None) else "sdpa")
    attn = f"packed {packed_attn}{' + compiled layers' if args.compile else ''}, padded {padded_attn}"
    pairs = make_pairs((args.steps + WARMUP) * args.batch_pairs, args.median, args.cap, cfg.vocab_size, seed=0)
    rows = []
    ceiling = matmul_ceiling_tflops() if device == "cuda" else None
    for variant in (["packed", "padded"] if not args.only else [args.only]):
        if device == "cpu" and not args.only:
            # one process per variant on CPU: peak RSS is per process, not per variant
            import subprocess

            out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--only", variant, "--out", "/tmp/_tt_" + variant],
                                 capture_output=True, text=True, check=True).stdout
            row = json.loads(next(ln for ln in out.splitlines() if ln.startswith("{")))
            rows.append(row)
            print(json.dumps(row), flush=True)
            continue
        try:
            if variant == "packed":
                row = run_packed(cfg, pairs, args.steps, args.batch_pairs, args.budget, device, dtype, args.checkpointing,
                                 packed_attn, args.compile, args.optimizer, args.lora, args.qlora, args.fixed_rows)
                row["planned_gib"] = planned_gib(cfg, args, dtype)
            else:
                row = run_padded(cfg, pairs, args.steps, args.batch_pairs, args.budget, device, dtype,
                                 args.checkpointing, padded_attn, args.optimizer, args.lora, args.length_sorted)
        except Exception as exc:  # noqa: BLE001 - on a lent GPU one failed variant must not cost the other's numbers
            import traceback

            traceback.print_exc()
            rows.append({"variant": variant, "error": f"{type(exc).__name__}: {str(exc)[:500]}"})
            print(json.dumps(rows[-1]), flush=True)
            gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()
            continue
        useful = sum(flops_per_pair(cfg, p) for p in row.pop("_pairs"))
        row["model_tflops_per_s"] = round(useful / row.pop("_elapsed") / 1e12, 2)
        if ceiling:
            row["mfu_vs_measured_ceiling"] = round(row["model_tflops_per_s"] / ceiling, 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    ok = len(rows) == 2 and all("real_tokens_per_s" in r for r in rows)
    speedup = rows[0]["real_tokens_per_s"] / rows[1]["real_tokens_per_s"] if ok else None
    device_name = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    result = {"benchmark": "train_throughput", "device": device_name, "torch": torch.__version__,
              "preset": args.preset, "attention": attn, "checkpointing": args.checkpointing, "compile": args.compile,
              "optimizer": args.optimizer, "lora_rank": args.lora, "qlora_nf4": args.qlora, "fixed_rows": args.fixed_rows, "padded_length_sorted": args.length_sorted,
              "flex_kernel_options": os.environ.get("MUSIC_FLEX_KERNEL_OPTIONS"), "steps": args.steps,
              "batch_pairs": args.batch_pairs, "packed_budget_tokens": args.budget,
              "length_distribution": f"log-normal median {args.median}, sigma 0.6, cap {args.cap}",
              "bf16_matmul_ceiling_tflops": round(ceiling, 1) if ceiling else None,
              "rows": rows, "packed_speedup_real_tokens_per_s": round(speedup, 2) if speedup else None,
              "date": time.strftime("%Y-%m-%d")}
    out = args.out or RESULTS / f"train_throughput_{args.preset}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    cols = ["variant"] + (["error"] if any("error" in r for r in rows) else [])
    cols += ["real_tokens_per_s", "padding_waste", "peak_memory_gib", "model_tflops_per_s"] + (
        ["mfu_vs_measured_ceiling", "peak_reserved_gib"] if ceiling else []) + ["planned_gib"]
    md = [f"# Train throughput: packed vs padded ({args.preset})", "",
          f"`python benchmarks/train_throughput.py --preset {args.preset}` on {device_name}, torch {torch.__version__}, "
          f"{result['date']}; attention {attn}; optimizer {args.optimizer}"
          f"{f', {variant_name}' if args.lora else ', full fine-tune'}"
          f"{' (NF4 backbone)' if args.qlora else ''}{', rows fixed at the budget' if args.fixed_rows else ''}; {args.steps} timed steps of {args.batch_pairs} pairs; lengths "
          f"{result['length_distribution']}" + (f"; bf16 matmul ceiling measured {ceiling:.0f} TFLOP/s" if ceiling else ""), "",
          "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(str(r.get(c)) for c in cols) + " |" for r in rows]
    if speedup:
        md += ["", f"Packed / padded real tokens per second: **{speedup:.2f}x**."]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
