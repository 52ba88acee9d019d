"""The ``bradley-terry`` trainer's options: the ``train`` section's keys beyond the training
stage's own (``trainer``, ``train_data``, ``eval_data``, ``output_dir``). They exist in the
config only when this trainer is selected."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from music_core.config.schema import TrainConfig, component_options
from music_core.config.schema import option as _f
from music_core.errors import ConfigError

from .optim import OPTIMIZERS


@dataclass
class LoraConfig:
    enabled: bool = _f(False, "train LoRA adapters (and the head) instead of the full backbone")
    r: int = _f(16, "LoRA rank")
    alpha: int = _f(32, "LoRA alpha")
    dropout: float = _f(0.0, "LoRA dropout")
    target_modules: list[str] = _f(["all-linear"], "modules to adapt")
    quantize_4bit: bool = _f(False, "QLoRA: the backbone's linear layers in NF4 4 bit under the LoRA adapters (needs bitsandbytes: "
                                    "pip install 'music-rm[qlora]'; CPU or GPU)")


@dataclass
class BradleyTerryConfig(TrainConfig):
    """``train.*`` when ``train.trainer`` is ``bradley-terry``."""

    backbone: str = _f("minilm", "model alias (minilm, smollm2-135m, *.gguf; `music plugins list` shows all), local folder or hub id")
    head: str = _f("auto", "registered reward head: auto (the backbone's own classifier head, so the model exports as "
                           "standard transformers: last-token on decoders, the paper's; cls on encoders), last-token, cls, "
                           "mean-pool, per-turn (the last two export with remote code)")
    head_options: dict[str, Any] = component_options("reward_head", "head", "options of the reward head")
    max_length: int = _f(512, "token cap per conversation; longer ones lose their oldest turns")
    max_steps: int = _f(-1, "optimizer steps; -1 means epochs decide")
    epochs: float = _f(6.0, "passes over the training pairs when max_steps is -1")
    batch_size: int = _f(8, "pairs per optimizer step (summed over devices and accumulation)")
    tokens_per_micro_batch: int = _f(8192, "packed tokens per forward pass (chosen + rejected)")
    lr: float = _f(1e-4, "peak learning rate")
    head_lr: float | None = _f(None, "learning rate of the head (default: lr)")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    warmup_ratio: float = _f(0.1, "share of steps spent warming up")
    scheduler: str = _f("cosine", "cosine, linear or constant decay after warmup")
    max_grad_norm: float = _f(1.0, "gradient clipping norm (0 disables)")
    margin: bool = _f(False, "subtract meta.margin inside the sigmoid, as Llama 2 did")
    center_rewards_coefficient: float | None = _f(None, "weight of the (r_c + r_r)^2 centering term, as TRL")
    precision: str = _f("auto", "auto (bf16 where the hardware has it), bf16 or fp32")
    param_dtype: str = _f("fp32", "dtype the weights and gradients are stored in: fp32 (bf16 autocast does the math), or "
                                  "bf16 (half the memory; updates without an fp32 master copy). The export is float32")
    optimizer: str = _f("adamw", "adamw, adamw_8bit (bitsandbytes: 2 bytes of state per parameter instead of 8) or "
                                 "adafactor (torch's: a factored second moment, no first)")
    gpus: int = _f(0, "GPUs the --dry-run memory plan assumes (0: those detected)")
    gpu_memory_gib: float = _f(0.0, "memory per GPU the --dry-run memory plan assumes, GiB (0: detected)")
    gradient_checkpointing: bool = _f(False, "trade compute for activation memory")
    compile: bool = _f(False, "torch.compile each transformer layer (fuses the norms and activations; the first steps "
                              "compile)")
    fixed_row_shape: bool = _f(False, "packed: fill every micro-batch up to tokens_per_micro_batch with pad sequences the "
                                      "rewards never read, so compiled layers (train.compile) see one shape and never "
                                      "recompile; costs the filler's compute")
    packing: bool = _f(True, "padding-free packing with block-diagonal attention (else length-grouped padding)")
    attention: str = _f("auto", "auto (GPU: flex; CPU: varlen when packed), sdpa, flex, varlen or eager")
    lora: LoraConfig = field(default_factory=LoraConfig, metadata={"help": "LoRA / QLoRA"})
    save_every: int = _f(25, "checkpoint every N steps (0: none); a rerun resumes from the latest one made with "
                               "the same config and data, and starts fresh (saying what changed) otherwise")
    log_every: int = _f(5, "steps between metric logs")
    eval_every: int = _f(0, "steps between held-out evaluations (0: at the end)")
    trackers: list[str] = _f([], "accelerate trackers: tensorboard, wandb, trackio (TRL's recommended one, local by "
                                 "default; `pip install 'music-rm[trackers]'`); metrics under TRL's names")
    run_name: str | None = _f(None, "the tracked run's name (`music sweep` sets it from the variant's overrides)")
    tracker_project: str = _f("music-rm", "the trackers' project")
    tracker_group: str | None = _f(None, "the trackers' group (`music sweep` sets it to the sweep)")
    seed: int = _f(0, "seed, set before the head is created")


def check(cfg: BradleyTerryConfig) -> None:
    """Rules types alone cannot express; each names its key."""
    def need(ok: bool, key: str, msg: str) -> None:
        if not ok:
            raise ConfigError(f"config key 'train.{key}': {msg}")

    need(cfg.precision in ("auto", "bf16", "fp32"), "precision", "must be auto, bf16 or fp32")
    need(cfg.scheduler in ("cosine", "linear", "constant"), "scheduler", "must be cosine, linear or constant")
    need(cfg.attention in ("auto", "sdpa", "flex", "varlen", "eager"), "attention", "must be auto, sdpa, flex, varlen or eager")
    need(cfg.param_dtype in ("fp32", "bf16"), "param_dtype", "must be fp32 or bf16")
    need(cfg.optimizer in OPTIMIZERS, "optimizer", f"must be one of {', '.join(OPTIMIZERS)}")
    need(not (cfg.param_dtype == "bf16" and cfg.precision == "fp32"), "param_dtype",
         "bf16 weights compute in bf16; train.precision=fp32 contradicts it (use auto or bf16)")
    need(cfg.gpus >= 0 and cfg.gpu_memory_gib >= 0, "gpus", "GPU count and memory cannot be negative")
    need(cfg.batch_size >= 1, "batch_size", "must be at least 1")
    need(cfg.max_length >= 16, "max_length", "must be at least 16")
