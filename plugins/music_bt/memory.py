"""Will it fit? A per-GPU memory estimate for training a backbone with the trainer's settings,
and the cheapest change that makes it fit (``music run/train --dry-run`` prints it).

Parameters are counted exactly from the backbone's config (the model is built on the meta
device: no weights are read). The estimate adds, per GPU:

- weights (fp32: 4 bytes, bf16: 2; QLoRA: 4-bit linear layers at 0.5625 bytes with their scales),
- gradients of what trains (the same dtype as the weights),
- optimizer state (AdamW: two states in the weights' dtype; 8-bit AdamW: two bytes; Adafactor:
  rows + columns per matrix),
- activations of one packed micro-batch (``tokens_per_micro_batch``): with gradient checkpointing
  every layer's input (fp32 residual) plus one layer recomputed; without, every layer's,
- a fixed 2 GiB for the CUDA context, kernels' workspaces and the allocator's fragmentation.

FSDP and ZeRO-3 divide weights, gradients and optimizer state by the number of GPUs; DDP does
not. The benchmarks (benchmarks/results/train_memory_*.json) set the estimate beside measured
peaks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .optim import STATE_BYTES, adafactor_state_elements

GIB = 2**30
OVERHEAD_GIB = 2.0
ACTIVATION_BYTES = 2  # bf16 autocast: most saved tensors are bf16

# Shapes of the paper's backbones, for planning where their config cannot be read (offline)
KNOWN_SHAPES: dict[str, dict[str, Any]] = {
    "google/gemma-2-9b-it": dict(model_type="gemma2", vocab_size=256000, hidden_size=3584, intermediate_size=14336,
                                 num_hidden_layers=42, num_attention_heads=16, num_key_value_heads=8, head_dim=256),
    "google/gemma-2-2b-it": dict(model_type="gemma2", vocab_size=256000, hidden_size=2304, intermediate_size=9216,
                                 num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4, head_dim=256),
}
KNOWN_SHAPES["google/gemma-2-9b"] = KNOWN_SHAPES["google/gemma-2-9b-it"]
KNOWN_SHAPES["google/gemma-2-2b"] = KNOWN_SHAPES["google/gemma-2-2b-it"]


@dataclass
class Counts:
    params: int            # all parameters of the backbone
    linear_params: int     # inside nn.Linear layers (what 4-bit quantizes)
    lora_params: int       # LoRA A and B for the configured targets
    matrix_shapes: list[tuple[int, ...]]
    hidden: int
    layers: int
    per_token_layer: int   # activation elements one layer saves per token


@dataclass
class Variant:
    name: str
    settings: dict[str, Any]
    gib: float
    parts: dict[str, float]


def backbone_config(backbone: str) -> tuple[Any, str]:
    """The backbone's config and where it came from (its folder or hub cache, else the table)."""
    from transformers import AutoConfig

    from music_core.models import resolve_model

    try:  # a plan calls nothing: a folder, or the hub cache, never the network
        return AutoConfig.from_pretrained(resolve_model(backbone), local_files_only=True), "config"
    except Exception:  # not on this machine, or not a model at all: the table, else nothing
        shape = KNOWN_SHAPES.get(backbone)
        if shape is None:
            return None, "unknown"
        kw = dict(shape)
        return AutoConfig.for_model(kw.pop("model_type"), **kw), "built-in shape"


def count(config: Any, lora_r: int, lora_targets: list[str]) -> Counts:
    import torch
    from transformers import AutoModel

    with torch.device("meta"):  # shapes only: the attention kernel does not matter, eager exists everywhere
        model = AutoModel.from_config(config, attn_implementation="eager")
    params = sum(p.numel() for p in model.parameters())
    linear = lora = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            linear += module.weight.numel()
            if lora_targets == ["all-linear"] or any(name.endswith(t) for t in lora_targets):
                lora += lora_r * (module.in_features + module.out_features)
    shapes = [tuple(p.shape) for p in model.parameters()]
    h = config.hidden_size
    heads = getattr(config, "num_attention_heads", 1)
    head_dim = getattr(config, "head_dim", None) or h // heads
    kv = getattr(config, "num_key_value_heads", heads) or heads
    f = getattr(config, "intermediate_size", 4 * h)
    # saved per token in one layer: norms' inputs and outputs and the residual stream (~10 h),
    # q and attention output (2 x heads x head_dim), k and v, and the gated MLP's four f-wide tensors
    per_token = 10 * h + 2 * heads * head_dim + 2 * kv * head_dim + 4 * f
    return Counts(params, linear, lora, shapes, h, config.num_hidden_layers, per_token)


def estimate(c: Counts, *, param_dtype: str, optimizer: str, lora: bool, quantize_4bit: bool, checkpointing: bool,
             tokens: int, shards: int = 1) -> tuple[float, dict[str, float]]:
    pb = 2 if param_dtype == "bf16" else 4
    if quantize_4bit:
        weights = c.linear_params * 0.5625 + (c.params - c.linear_params) * pb
    else:
        weights = c.params * pb
    trainable = c.lora_params if lora else c.params
    grads = trainable * pb
    if optimizer == "adafactor" and not lora:
        state = adafactor_state_elements(c.matrix_shapes) * 4
    else:
        state = trainable * STATE_BYTES[optimizer](pb)
    if lora:
        weights += c.lora_params * pb
    sharded = (weights + grads + state) / max(1, shards)
    if checkpointing:
        acts = tokens * c.hidden * 4 * c.layers + tokens * c.per_token_layer * ACTIVATION_BYTES * 2
    else:
        acts = tokens * c.per_token_layer * ACTIVATION_BYTES * c.layers
    parts = {"weights": weights / shards / GIB, "gradients": grads / shards / GIB, "optimizer": state / shards / GIB,
             "activations": acts / GIB, "overhead": OVERHEAD_GIB}
    return sharded / GIB + acts / GIB + OVERHEAD_GIB, parts


def variants(cfg: Any) -> list[tuple[str, dict[str, Any]]]:
    """The configured settings first, then the standard ways down, cheapest last."""
    configured = {"param_dtype": cfg.param_dtype, "optimizer": cfg.optimizer, "lora": cfg.lora.enabled,
                  "quantize_4bit": cfg.lora.quantize_4bit, "checkpointing": cfg.gradient_checkpointing}
    ladder = [
        ("full, bf16 weights, 8-bit AdamW, checkpointing",
         {"param_dtype": "bf16", "optimizer": "adamw_8bit", "lora": False, "quantize_4bit": False, "checkpointing": True}),
        ("full, bf16 weights, Adafactor, checkpointing",
         {"param_dtype": "bf16", "optimizer": "adafactor", "lora": False, "quantize_4bit": False, "checkpointing": True}),
        ("LoRA, bf16 base, checkpointing",
         {"param_dtype": "bf16", "optimizer": "adamw", "lora": True, "quantize_4bit": False, "checkpointing": True}),
        ("QLoRA (4-bit base), checkpointing",
         {"param_dtype": "bf16", "optimizer": "adamw", "lora": True, "quantize_4bit": True, "checkpointing": True}),
    ]
    return [("configured", configured)] + [v for v in ladder if v[1] != configured]


def settings_keys(s: dict[str, Any]) -> str:
    keys = [f"train.param_dtype={s['param_dtype']}", f"train.optimizer={s['optimizer']}",
            f"train.gradient_checkpointing={str(s['checkpointing']).lower()}",
            f"train.lora.enabled={str(s['lora']).lower()}"]
    if s["quantize_4bit"]:
        keys.append("train.lora.quantize_4bit=true")
    return " ".join(keys)


def detected_gpus() -> tuple[int, float]:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.device_count(), torch.cuda.get_device_properties(0).total_memory / GIB
    except Exception:  # no torch CUDA build: plan from the config's numbers only
        pass
    return 0, 0.0


def hardware(cfg: Any) -> tuple[int, float]:
    """GPUs and memory per GPU (GiB): ``train.gpus`` and ``train.gpu_memory_gib``, else those detected."""
    gpus, memory = cfg.gpus, cfg.gpu_memory_gib
    if not gpus or not memory:
        found, found_memory = detected_gpus()
        gpus, memory = gpus or found, memory or found_memory
    return gpus, memory


def misfit(cfg: Any) -> str | None:
    """Why the configured settings do not fit the GPUs, with the first settings that do (for the
    preflight of ``music run``), or None: they fit, or there is no GPU or backbone shape to
    measure against."""
    gpus, memory = hardware(cfg)
    config = backbone_config(cfg.backbone)[0] if gpus and memory else None
    if config is None:
        return None
    c = count(config, cfg.lora.r, list(cfg.lora.target_modules))
    need, first_fit = float("inf"), None
    for name, s in variants(cfg):
        for shards, how in ((1, "1 GPU / DDP"), (gpus, f"FSDP/ZeRO-3 over {gpus}")):
            if how.startswith("FSDP") and gpus <= 1:  # as the plan: one GPU has nothing to shard over
                continue
            gib = estimate(c, tokens=cfg.tokens_per_micro_batch, shards=shards, **s)[0]
            if name == "configured":
                need = min(need, gib)
            elif gib <= memory and first_fit is None:
                first_fit = (s, how)
    if need <= memory:
        return None
    fix = (f"the first settings that fit ({first_fit[1]}): {settings_keys(first_fit[0])}" if first_fit
           else "nothing listed fits: lower train.tokens_per_micro_batch or add GPUs")
    return (f"the memory plan does not fit: training {cfg.backbone} as configured needs {need:.1f} GiB per GPU, "
            f"{gpus} GPU(s) of {memory:.0f} GiB (train.gpus, train.gpu_memory_gib) have less; {fix} "
            "(`music run --dry-run` prints the plan)")


def plan(cfg: Any) -> list[str]:
    """Lines for the dry-run: the configured estimate, whether it fits, and what would."""
    gpus, memory = hardware(cfg)
    config, source = backbone_config(cfg.backbone)
    if config is None:
        return [f"memory: cannot read {cfg.backbone}'s config (offline?); no estimate"]
    c = count(config, cfg.lora.r, list(cfg.lora.target_modules))
    where = f"{gpus} GPU(s) of {memory:.0f} GiB" if gpus and memory else "no GPU given or detected (set train.gpus, train.gpu_memory_gib)"
    lines = [f"memory plan for {cfg.backbone} ({c.params / 1e9:.2f}B parameters, shape from {source}), "
             f"{cfg.tokens_per_micro_batch} tokens per micro-batch, on {where}:"]
    first_fit = None
    for name, s in variants(cfg) if memory else variants(cfg)[:1]:  # no hardware to fit: the configured one
        for shards, how in ((1, "1 GPU / DDP"), (gpus, f"FSDP/ZeRO-3 over {gpus}")):
            if how.startswith("FSDP") and gpus <= 1:
                continue
            gib, parts = estimate(c, tokens=cfg.tokens_per_micro_batch, shards=shards, **s)
            fits = "fits" if memory and gib <= memory else ("DOES NOT FIT" if memory else "")
            detail = ", ".join(f"{k} {v:.1f}" for k, v in parts.items())
            lines.append(f"  {name:50s} {how:22s} {gib:7.1f} GiB/GPU {fits:13s} ({detail})")
            if memory and gib <= memory and first_fit is None:
                first_fit = (name, s, how)
    if memory:
        if first_fit and first_fit[0] == "configured":
            lines.append(f"  the configured settings fit ({first_fit[2]})")
        elif first_fit:
            lines.append(f"  the configured settings do not fit; the first that does ({first_fit[2]}): "
                         f"{settings_keys(first_fit[1])}")
        else:
            lines.append("  nothing listed fits: lower train.tokens_per_micro_batch or add GPUs")
    return lines
