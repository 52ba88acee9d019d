"""The ``bradley-terry`` trainer component: data -> encoded pairs -> training loop -> export."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from music_core import progress
from music_core.config.schema import TrainConfig as StageTrainConfig
from music_core.contracts import Problem, RewardScorer, Trainer, TrainResult
from music_core.data import PreferencePair
from music_core.errors import ConfigError, MusicError
from music_core.jsonl import read_records, write_text_atomic

from .options import BradleyTerryConfig as TrainConfig

# Settings that do not change what training computes: a checkpoint survives changes to these.
NOT_IN_FINGERPRINT = ("log_every", "trackers", "run_name", "tracker_project", "tracker_group", "save_every",
                      "eval_every", "output_dir", "eval_data", "train_data")


# Held-out pairs whose conversations are scored twice at export, by the trainer and by the saved
# folder through plain transformers: an export that does not reproduce training is refused.
EXPORT_PROBE_PAIRS = 4

TRUNCATION_RULE = ("a conversation longer than max_length tokens (after the chat template) loses its oldest "
                   "exchanges (user + assistant message) one at a time, keeping a leading system message and at least "
                   "the final exchange; if that is still too long, its first tokens are cut so that the end stays")


def resolve_head(name: str, decoder: bool) -> str:
    """``auto``: the head each backbone kind's own sequence classifier has, so the trained model
    exports as the standard class: the last token on decoders (the paper's), cls on encoders."""
    if name != "auto":
        return name
    return "last-token" if decoder else "cls"


def _trainer_scores(net: Any, encoder: Any, cfg: TrainConfig, pack: bool, pad_id: int, device: Any,
                    conversations: list[list[dict]]) -> list[float]:
    """The trained network's own rewards, in float32 without autocast, batched as in evaluation."""
    import torch

    from .batching import PairExample, packed, padded

    encoded = [encoder.encode(c) for c in conversations]
    rows = [PairExample(i, encoded[2 * i], encoded[2 * i + 1]) for i in range(len(encoded) // 2)]
    net.eval()
    with torch.no_grad():
        mb = (packed(rows) if pack else padded(rows, pad_id)).to(device)
        out = net(mb).float().tolist()
    net.train()
    return out


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
    config_class = TrainConfig
    loads_plain_folders = True  # any AutoModelForSequenceClassification folder or hub id

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        from .options import check

        check(cfg)

    @classmethod
    def describe(cls, cfg: Any) -> str:
        length = f"{cfg.max_steps} steps" if cfg.max_steps > 0 else f"{cfg.epochs} epochs"
        line = (f"{cls.name}, {cfg.head} head on {cfg.backbone}, max length {cfg.max_length}, {length}, "
                f"batch {cfg.batch_size}, lr {cfg.lr}, {cfg.optimizer}, {cfg.param_dtype} weights")
        from .memory import plan

        return "\n    ".join([line, *plan(cfg)])

    @classmethod
    def preflight(cls, cfg: Any) -> list[Problem]:
        """The backbone is on this machine when the hub is offline, and the memory plan fits
        the GPUs (``train.gpus``, ``train.gpu_memory_gib``, else those detected)."""
        from music_core.models import resolve_model
        from music_core.preflight import hub_offline

        from .memory import misfit

        problems = []
        try:
            hub_id = resolve_model(cfg.backbone) == cfg.backbone and not Path(cfg.backbone).exists()
        except MusicError as exc:  # a folder that is not there
            problems.append(Problem("train.backbone", str(exc)))
            hub_id = False
        if hub_id and hub_offline():
            from huggingface_hub import try_to_load_from_cache

            if not isinstance(try_to_load_from_cache(cfg.backbone, "config.json"), str):
                problems.append(Problem("train.backbone", f"{cfg.backbone} is not in the hub cache and the hub is "
                                                          "offline (HF_HUB_OFFLINE): download it first, or name a "
                                                          "local folder or a model alias"))
        too_big = misfit(cfg)
        if too_big:
            problems.append(Problem("train", too_big))
        return problems

    def train(self, section: StageTrainConfig) -> TrainResult:
        if not isinstance(section, TrainConfig):
            raise ConfigError("bradley-terry: the train section was not loaded with this trainer's options "
                              "(load the config with train.trainer=bradley-terry)")
        cfg = section
        import torch
        from transformers import AutoTokenizer

        from music_core.models import quiet_transformers, resolve_model

        from .data import encode_pairs
        from .encoding import ConversationEncoder, TruncationStats
        from .export import ExportSpec, choose_pad_id, export, export_form
        from .loop import train_loop
        from .model import is_decoder, load_backbone, reward_net, unloadable_backbone

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
        try:
            tok = AutoTokenizer.from_pretrained(path)
        except OSError as exc:  # the first thing that reads the backbone: say which key names it
            raise unloadable_backbone(path, exc) from None
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

        backbone_config = AutoConfig.from_pretrained(path)
        decoder = is_decoder(backbone_config)
        pack = cfg.packing and decoder  # encoders attend both ways: no causal block mask to pack with
        if cfg.attention == "flex" and not torch.cuda.is_available():
            raise ConfigError("config key 'train.attention': flex attention has no backward on CPU; "
                              "use auto, varlen, sdpa or eager")
        if cfg.lora.quantize_4bit and not cfg.lora.enabled:
            raise ConfigError("config key 'train.lora.quantize_4bit': 4-bit weights are frozen; "
                              "QLoRA trains adapters, so set train.lora.enabled=true too")
        # The head and its export form are settled before the backbone loads (minutes for a large
        # model): a wrong head name or a head that cannot be exported stops the run at once.
        head_name = resolve_head(cfg.head, decoder)
        if head_name == "cls" and decoder:
            raise ConfigError(f"config key 'train.head': the cls head reads the first token, which on a decoder "
                              f"({cfg.backbone}) attends to nothing after it; use last-token (or auto)")
        head = self._head(head_name, cfg.head_options)
        form = export_form(head, backbone_config)
        if form == "remote-code":
            progress.log(f"reward head {head_name!r} on {cfg.backbone}: the exported model ships its own code "
                         "(load it with trust_remote_code=True); a standard export needs last-token (decoders) or cls (encoders)")
        weights = torch.bfloat16 if cfg.param_dtype == "bf16" else torch.float32
        load: dict[str, Any] = dict(dtype=weights, attention=cfg.attention, packing=pack)
        backbone = load_backbone(path, gradient_checkpointing=cfg.gradient_checkpointing and not cfg.lora.quantize_4bit,
                                 compile_layers=cfg.compile and not cfg.lora.quantize_4bit,
                                 quantize_4bit=cfg.lora.quantize_4bit, **load)
        four_bit = sum(type(m).__name__ == "Linear4bit" for m in backbone.modules())
        if cfg.lora.quantize_4bit:
            progress.log(f"QLoRA: {four_bit} linear layers of {cfg.backbone} hold NF4 weights")
        if cfg.lora.enabled:
            torch.manual_seed(cfg.seed)  # LoRA's A matrices start random: the same in every process and run
            backbone = _with_lora(backbone, cfg)
        torch.manual_seed(cfg.seed)  # the seed is set right before the head is created
        head_module = head.build(backbone.config.hidden_size).to(weights)
        net = reward_net(backbone, head, head_module)
        if cfg.packing and not decoder:
            progress.log(f"{cfg.backbone}: an encoder; using length-grouped padded batches instead of packing")
        extra = {"truncation": stats.to_dict(), "eval_truncation": eval_stats.to_dict(),
                 "encode_seconds": round(time.perf_counter() - t0, 2), "packed": pack, "backbone": cfg.backbone,
                 "head": head_name, "export_form": form, "four_bit_linear_layers": four_bit}
        net, acc, metrics, full_state = train_loop(cfg=cfg, net=net, train=train, held_out=held, out_dir=out_dir, pack=pack,
                                       pad_id=pad_id, log_extra=extra, fingerprint=fingerprint(cfg))
        if acc.is_main_process:
            # the export builds and reloads whole models: never inside ZeRO-3's partitioning
            with _without_zero3_init():
                if full_state is not None:  # a sharded run: its modules hold shards; export from a whole copy
                    net = _unsharded(net, full_state, cfg, head, backbone_config)
                if cfg.param_dtype == "bf16":
                    net.float()  # exported (and checked against plain transformers) in float32
                if cfg.lora.quantize_4bit:
                    # QLoRA's usual export: the trained adapters merged into the full-precision base, not
                    # into its 4-bit copy, so the folder loads with plain transformers (no bitsandbytes)
                    net.backbone = _merged_into_full_precision(net.backbone, path, cfg, load)
                elif cfg.lora.enabled:
                    net.backbone = net.backbone.merge_and_unload()  # a plain backbone: loads without peft
                reward_stats = {"mean": metrics["eval_reward_mean"], "std": metrics["eval_reward_std"]} if held else {}
                meta = {"backbone": cfg.backbone, "add_special_tokens": encoder.add_special, "trainer": self.name,
                        "truncation": TRUNCATION_RULE, "reward_stats": reward_stats}
                spec = ExportSpec(form=form, head=head, eom_id=encoder.eom_id, pad_id=pad_id, max_length=cfg.max_length,
                                  card=model_card(cfg, metrics, head_name, form, encoder.add_special), metadata=meta)
                probe = [c for p in (eval_pairs or train_pairs)[:EXPORT_PROBE_PAIRS] for c in (p.chosen, p.rejected)]
                scores = partial(_trainer_scores, net, encoder, cfg, pack, pad_id, next(net.parameters()).device)
                metrics.update(export(net, tok, out_dir, spec, scores, probe))
                write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2, default=str) + "\n")
                # The exported model is the result: the resume points (optimizer state, ~3x the model
                # on disk) are no longer needed once it is written.
                import shutil

                shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
        acc.wait_for_everyone()
        summary = {"train pairs": metrics.get("train_pairs"), "steps": metrics.get("steps"),
                   "final train loss": metrics.get("final_loss"), "held-out accuracy": metrics.get("eval_accuracy"),
                   "held-out pairs": metrics.get("eval_pairs", 0), "tokens/s": metrics.get("tokens_per_s"),
                   "export": metrics.get("export_form")}
        return TrainResult(model_dir=str(out_dir), metrics=metrics, summary=summary,
                           description=f"`{head_name}` head on `{cfg.backbone}`")

    def _head(self, name: str, options: dict[str, Any]) -> Any:
        from music_core.errors import UnknownComponentError
        from music_core.plugins import get_registry

        try:
            if self.has_context:
                return self.ctx.component("reward_head", name, options)
            return get_registry().create("reward_head", name, options)
        except UnknownComponentError as exc:
            raise ConfigError(f"config key 'train.head': {exc} (or auto)") from None

    def load_scorer(self, model_dir: str, batch_size: int | None = None) -> RewardScorer:
        from .scorer import HFRewardScorer

        return HFRewardScorer(model_dir) if batch_size is None else HFRewardScorer(model_dir, batch_size=batch_size)


def _unsharded(trained: Any, full_state: dict[str, Any], cfg: TrainConfig, head: Any, backbone_config: Any) -> Any:
    """The trained net as one process's plain module: the same structure built on the meta
    device (no second load of the pretrained weights, no random init), filled with the state
    dict gathered from the shards (FSDP, ZeRO-3). Buffers are never sharded (rotary tables and
    the like are not in a state dict): they come from the trained modules."""
    import torch
    from transformers import AutoModel

    from .model import reward_net

    with torch.device("meta"):  # the caller holds _without_zero3_init()
        backbone = AutoModel.from_config(backbone_config, attn_implementation=trained.backbone.config._attn_implementation)
        if cfg.lora.enabled:
            backbone = _with_lora(backbone, cfg)
        net = reward_net(backbone, head, head.build(backbone_config.hidden_size))
    net = net.to_empty(device="cpu")
    missing, unexpected = net.load_state_dict(full_state, strict=False)
    if missing or unexpected:
        raise MusicError(f"the weights gathered from the shards do not fit the model: missing {list(missing)[:3]}, "
                         f"unexpected {list(unexpected)[:3]}")
    trained_buffers = dict(trained.named_buffers())
    for name, buf in net.named_buffers():
        if name in trained_buffers:
            buf.copy_(trained_buffers[name].to(buf.device, buf.dtype))
    return net.float()


@contextlib.contextmanager
def _without_zero3_init() -> Iterator[None]:
    """transformers builds every model inside DeepSpeed's ZeRO-3 partitioning while a ZeRO-3
    config is registered (the whole run, under accelerate); the whole export copy must not be."""
    try:
        from transformers.integrations import deepspeed as hf_ds
    except ImportError:
        yield
        return
    ref = hf_ds._hf_deepspeed_config_weak_ref
    hf_ds._hf_deepspeed_config_weak_ref = None
    try:
        yield
    finally:
        hf_ds._hf_deepspeed_config_weak_ref = ref


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
    unexpected = list(getattr(set_peft_model_state_dict(fresh, adapters), "unexpected_keys", None) or [])
    if unexpected:
        raise MusicError(f"QLoRA export: adapter weights that do not fit the full-precision base: {unexpected[:3]}")
    return fresh.merge_and_unload()


def model_card(cfg: TrainConfig, metrics: dict[str, Any], head: str, form: str, add_special: bool) -> str:
    remote = form == "remote-code"
    trust = ", trust_remote_code=True" if remote else ""
    ev = {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items() if k.startswith("eval_")}
    loading = (f"The `{head}` head has no standard transformers form for this backbone, so the model ships its code "
               "(`modeling_music_rm.py`, and the head's own `music_head.py`) and loads with `trust_remote_code=True`."
               if remote else
               f"The `{head}` head is the backbone's own sequence-classification head: the model loads in plain "
               "transformers (RewardBench, TRL, vLLM's reward API) without remote code.")
    return f"""---
library_name: transformers
tags: [reward-model, bradley-terry, music, multi-turn]
---
# Reward model trained with music (MUSIC, arXiv 2512.24693)

A Bradley-Terry reward model: `{head}` head on `{cfg.backbone}`, trained on `{cfg.train_data}`
for {metrics.get('steps')} steps (batch {cfg.batch_size} pairs, lr {cfg.lr}, max length {cfg.max_length}).
{loading}

Held-out: {json.dumps(ev)}

`config.json` holds `mean` and `std` of the reward on the held-out conversations (chosen and
rejected), for users who normalize rewards (as OpenRLHF does).

## Truncation

Training saw at most {cfg.max_length} tokens per conversation: {TRUNCATION_RULE}. Plain transformers
truncation cuts differently (usually the end, where the reward is read), so score long
conversations with the helper below (`music eval` does the same).

## Use

```python
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

MAX_LENGTH = {cfg.max_length}
ADD_SPECIAL_TOKENS = {add_special}

def encode(tok, messages):
    \"\"\"Token ids as in training: the oldest exchanges go first, the end is always kept.\"\"\"
    head = messages[:1] if messages and messages[0]["role"] == "system" else []
    body = messages[len(head):]
    while True:
        text = tok.apply_chat_template(head + body, tokenize=False)
        ids = tok(text, add_special_tokens=ADD_SPECIAL_TOKENS)["input_ids"]
        if len(ids) <= MAX_LENGTH or len(body) <= 2:
            return ids[-MAX_LENGTH:]
        body = body[2:]

tok = AutoTokenizer.from_pretrained(path{trust})
model = AutoModelForSequenceClassification.from_pretrained(path{trust}).eval()

def reward(messages):
    with torch.no_grad():
        return model(input_ids=torch.tensor([encode(tok, messages)])).logits[0, 0].item()
```
"""
