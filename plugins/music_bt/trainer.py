"""The ``bradley-terry`` trainer component: data -> encoded pairs -> training loop -> export."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from music_core import progress
from music_core.config.schema import TrainConfig
from music_core.contracts import RewardScorer, Trainer, TrainResult
from music_core.data import PreferencePair
from music_core.errors import ConfigError, MusicError
from music_core.jsonl import read_records, write_text_atomic

# Settings that do not change what training computes: a checkpoint survives changes to these.
NOT_IN_FINGERPRINT = ("log_every", "trackers", "save_every", "eval_every", "output_dir", "eval_data", "train_data")


def fingerprint(cfg: TrainConfig) -> dict[str, Any]:
    """What a checkpoint must have been made with to be resumed: every training setting and
    the training data's content (not its path)."""
    import dataclasses
    import hashlib

    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_IN_FINGERPRINT}
    digest = hashlib.sha256(Path(cfg.train_data).read_bytes()).hexdigest() if cfg.train_data else None
    return {"train": settings, "train_data_sha256": digest}


class BradleyTerryTrainer(Trainer):
    name = "bradley-terry"
    description = "pairwise Bradley-Terry reward model on any HF backbone, packed, on accelerate"

    def train(self, cfg: TrainConfig) -> TrainResult:
        import torch
        from transformers import AutoTokenizer

        from music_core.assets import quiet_transformers, resolve_model

        from .data import encode_pairs
        from .encoding import ConversationEncoder, TruncationStats
        from .export import choose_pad_id, export
        from .loop import train_loop
        from .model import is_decoder, load_backbone, reward_net

        quiet_transformers()
        if not cfg.train_data:
            raise ConfigError("config key 'train.train_data': no training pairs given")
        out_dir = Path(cfg.output_dir or "rm")
        out_dir.mkdir(parents=True, exist_ok=True)
        train_pairs = read_records(cfg.train_data, PreferencePair.from_dict)  # a bad line fails here, file:line
        eval_pairs = read_records(cfg.eval_data, PreferencePair.from_dict) if cfg.eval_data else []
        if not train_pairs:
            raise MusicError(f"{cfg.train_data}: no training pairs")
        path = resolve_model(cfg.backbone)
        tok = AutoTokenizer.from_pretrained(path)
        encoder = ConversationEncoder(tok, cfg.max_length)
        pad_id = choose_pad_id(tok, encoder.eom_id)
        t0 = time.perf_counter()
        stats = TruncationStats()
        train = encode_pairs(encoder, train_pairs, stats, cfg.margin)
        eval_stats = TruncationStats()
        held = encode_pairs(encoder, eval_pairs, eval_stats)
        if stats.shared_reward_position:
            progress.log(f"warning: {stats.shared_reward_position} training pairs have chosen and rejected identical up to "
                         f"the reward position (after truncation to {cfg.max_length} tokens): they teach nothing. "
                         f"e.g. {stats.examples[:2]}")
        if stats.shortened:
            progress.log(f"{stats.shortened} of {stats.conversations} training conversations exceed "
                         f"{cfg.max_length} tokens: dropped {stats.dropped_turns} oldest turns, hard-cut {stats.hard_cut}")
        from transformers import AutoConfig

        decoder = is_decoder(AutoConfig.from_pretrained(path))
        pack = cfg.packing and decoder  # encoders attend both ways: no causal block mask to pack with
        if cfg.attention == "flex" and not torch.cuda.is_available():
            raise ConfigError("config key 'train.attention': flex attention has no backward on CPU; "
                              "use auto, varlen, sdpa or eager")
        if cfg.lora.quantize_4bit and not cfg.lora.enabled:
            raise ConfigError("config key 'train.lora.quantize_4bit': 4-bit weights are frozen; "
                              "QLoRA trains adapters, so set train.lora.enabled=true too")
        load = dict(dtype=torch.float32, attention=cfg.attention, packing=pack)
        backbone = load_backbone(path, gradient_checkpointing=cfg.gradient_checkpointing and not cfg.lora.quantize_4bit,
                                 compile_layers=cfg.compile and not cfg.lora.quantize_4bit,
                                 quantize_4bit=cfg.lora.quantize_4bit, **load)
        four_bit = sum(type(m).__name__ == "Linear4bit" for m in backbone.modules())
        if cfg.lora.quantize_4bit:
            progress.log(f"QLoRA: {four_bit} linear layers of {cfg.backbone} hold NF4 weights")
        if cfg.lora.enabled:
            backbone = _with_lora(backbone, cfg)
        head = self.ctx.component("reward_head", cfg.head, cfg.head_options) if self.ctx else None
        if head is None:
            from music_core.plugins import get_registry

            head = get_registry().create("reward_head", cfg.head, cfg.head_options)
        torch.manual_seed(cfg.seed)  # the seed is set right before the head is created
        head_module = head.build(backbone.config.hidden_size)
        net = reward_net(backbone, head, head_module)
        if cfg.packing and not decoder:
            progress.log(f"{cfg.backbone}: an encoder; using length-grouped padded batches instead of packing")
        extra = {"truncation": stats.to_dict(), "eval_truncation": eval_stats.to_dict(),
                 "encode_seconds": round(time.perf_counter() - t0, 2), "packed": pack, "backbone": cfg.backbone,
                 "head": cfg.head, "four_bit_linear_layers": four_bit}
        net, acc, metrics = train_loop(cfg=cfg, net=net, train=train, held_out=held, out_dir=out_dir, pack=pack,
                                       pad_id=pad_id, log_extra=extra, fingerprint=fingerprint(cfg))
        full_state = metrics.pop("_full_state", None)
        if acc.is_main_process:
            if full_state is not None:
                net.load_state_dict(full_state)  # the gathered weights of a sharded run
            if cfg.lora.quantize_4bit:
                # QLoRA's usual export: the trained adapters merged into the full-precision base, not
                # into its 4-bit copy, so the folder loads with plain transformers (no bitsandbytes)
                net.backbone = _merged_into_full_precision(net.backbone, path, cfg, load)
            elif cfg.lora.enabled:
                net.backbone = net.backbone.merge_and_unload()  # a plain backbone: loads without peft
            native = head.native_export and decoder
            export(net, tok, out_dir=out_dir, head_name=cfg.head, pooling=head.pooling,
                   combine=getattr(getattr(head, "opts", None), "combine", None), eom_id=encoder.eom_id, pad_id=pad_id,
                   max_length=cfg.max_length, native=native, card=model_card(cfg, metrics, native),
                   extra={"backbone": cfg.backbone, "add_special_tokens": encoder.add_special, "trainer": self.name})
            write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2, default=str) + "\n")
            # The exported model is the result: the resume points (optimizer state, ~3x the model
            # on disk) are no longer needed once it is written.
            import shutil

            shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
        acc.wait_for_everyone()
        return TrainResult(model_dir=str(out_dir), metrics=metrics)

    def load_scorer(self, model_dir: str) -> RewardScorer:
        from .scorer import HFRewardScorer

        return HFRewardScorer(model_dir)


def _with_lora(backbone: Any, cfg: TrainConfig) -> Any:
    try:
        from peft import get_peft_model
    except ImportError:
        raise MusicError("train.lora.enabled needs peft (pip install peft)") from None
    if cfg.lora.quantize_4bit:
        from peft import prepare_model_for_kbit_training

        # norms to fp32, inputs that carry gradients, and checkpointing set up the way 4-bit layers need
        backbone = prepare_model_for_kbit_training(backbone, use_gradient_checkpointing=cfg.gradient_checkpointing,
                                                   gradient_checkpointing_kwargs={"use_reentrant": False})
    return get_peft_model(backbone, _lora_config(cfg))


def _lora_config(cfg: TrainConfig) -> Any:
    from peft import LoraConfig

    targets = cfg.lora.target_modules
    return LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules="all-linear" if targets == ["all-linear"] else list(targets))


def _merged_into_full_precision(trained: Any, path: str, cfg: TrainConfig, load: dict[str, Any]) -> Any:
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    from .model import load_backbone

    adapters = {k: v.detach().float().cpu() for k, v in get_peft_model_state_dict(trained).items()}
    base = load_backbone(path, gradient_checkpointing=False, **load)
    fresh = get_peft_model(base, _lora_config(cfg))
    missing = set_peft_model_state_dict(fresh, adapters)
    if getattr(missing, "unexpected_keys", None):
        raise MusicError(f"QLoRA export: adapter weights that do not fit the full-precision base: "
                         f"{missing.unexpected_keys[:3]}")
    return fresh.merge_and_unload()


def model_card(cfg: TrainConfig, metrics: dict[str, Any], native: bool) -> str:
    load = ("AutoModelForSequenceClassification.from_pretrained(path)" if native else
            "AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True)")
    ev = {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items() if k.startswith("eval_")}
    return f"""---
library_name: transformers
tags: [reward-model, bradley-terry, music, multi-turn]
---
# Reward model trained with music (MUSIC, arXiv 2512.24693)

A Bradley-Terry reward model: `{cfg.head}` head on `{cfg.backbone}`, trained on `{cfg.train_data}`
for {metrics.get('steps')} steps (batch {cfg.batch_size} pairs, lr {cfg.lr}, max length {cfg.max_length}).

Held-out: {json.dumps(ev)}

## Use

```python
from transformers import AutoModelForSequenceClassification, AutoTokenizer
tok = AutoTokenizer.from_pretrained(path)
model = {load}
text = tok.apply_chat_template(messages, tokenize=False)
inputs = tok(text, return_tensors="pt", add_special_tokens={metrics.get('add_special_tokens', 'see music_rm.json')})
reward = model(**inputs).logits[0, 0]
```

Conversations longer than {cfg.max_length} tokens were shortened by dropping their oldest turns;
score the same way (`music_rm.json` holds the settings; `music eval` does it for you).
"""
