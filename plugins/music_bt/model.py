"""The reward model: a Hugging Face backbone (no LM head) plus a registered reward head."""

from __future__ import annotations

from typing import Any

from .batching import MicroBatch


def load_backbone(path: str, *, dtype: Any, attention: str, gradient_checkpointing: bool, packing: bool = False,
                  compile_layers: bool = False, quantize_4bit: bool = False) -> Any:
    from transformers import AutoConfig, AutoModel

    try:
        config = AutoConfig.from_pretrained(path)
    except OSError as exc:
        raise unloadable_backbone(path, exc) from None
    kwargs: dict[str, Any] = {"dtype": dtype}
    impl = attention_impl(config, attention, packing and is_decoder(config))
    if impl:
        kwargs["attn_implementation"] = impl
    if quantize_4bit:
        kwargs.update(four_bit_loading())
    model = AutoModel.from_pretrained(path, **kwargs)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if compile_layers:
        compile_each_layer(model)
    return model


def unloadable_backbone(path: str, exc: Exception) -> Exception:
    """The error for a backbone that neither an alias, a folder nor the hub cache provides."""
    from music_core.errors import MusicError
    from music_core.models import alias_names

    aliases = ", ".join(a for a in alias_names() if "*" not in a)
    return MusicError(f"config key 'train.backbone': cannot load {path!r} ({str(exc).splitlines()[0]}); offline? "
                      f"use a local folder or an alias ({aliases}; `music plugins list` shows them)")


def four_bit_loading() -> dict[str, Any]:
    """QLoRA's backbone: NF4 weights with double quantisation, computing in bf16 on a GPU that has
    it (fp32 elsewhere); each process loads onto its own device (DDP)."""
    import os

    import torch
    from transformers import BitsAndBytesConfig

    from music_core.errors import MusicError

    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise MusicError("train.lora.quantize_4bit needs bitsandbytes (pip install 'music-rm[qlora]')") from None
    cuda = torch.cuda.is_available()
    compute = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=compute)
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu"
    return {"quantization_config": config, "device_map": {"": device}}


def compile_each_layer(model: Any) -> int:
    """Compile every transformer layer on its own (regional compilation): one graph serves all
    the identical layers, so compiling costs seconds, not the minutes a whole-model compile does,
    and the embedding, the mask construction and the head stay eager."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    for layer in layers:
        layer.compile()
    return len(layers)


def is_decoder(config: Any) -> bool:
    return not getattr(config, "is_encoder_decoder", False) and config.model_type not in (
        "bert", "roberta", "deberta", "deberta-v2", "distilbert", "electra", "xlm-roberta", "mpnet", "modernbert")


def attention_impl(config: Any, requested: str, packed: bool = False) -> str | None:
    """auto: on GPU flex attention (``music_flex``: its block mask skips the empty blocks of packed
    rows, and it honours Gemma-2's soft-capping, which sdpa refuses); on CPU, packed rows attend
    per sequence (``music_varlen``), padded batches use sdpa."""
    import torch

    softcap = getattr(config, "attn_logit_softcapping", None)
    if requested == "auto":
        if torch.cuda.is_available():
            requested = "flex" if (packed or softcap) else "sdpa"
        else:
            requested = "varlen" if packed else ("eager" if softcap else "sdpa")
    if requested in ("varlen", "flex"):
        from . import flex, varlen

        module = varlen if requested == "varlen" else flex
        module.register()
        return module.NAME
    return {"sdpa": "sdpa", "eager": "eager"}[requested]


def reward_net(backbone: Any, head: Any, head_module: Any) -> Any:
    """An ``nn.Module`` whose forward returns one reward per sequence of a micro-batch, so that
    accelerate (DDP, FSDP) wraps and syncs it like any model."""
    import torch

    class RewardNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone
            self.score = head_module
            self.head = head
            self.decoder = is_decoder(backbone.config)

        def forward(self, batch: MicroBatch) -> Any:
            if batch.position_ids is not None:
                kw = {"position_ids": batch.position_ids}
                impl = self.backbone.config._attn_implementation
                if impl in ("music_varlen", "music_flex"):
                    kw["cu_seq_lens_q"] = batch.cu_seqlens(self.backbone.device)
                if impl == "music_flex":  # one block mask per window for all layers of this micro-batch
                    from .flex import block_masks

                    windows = {None, getattr(self.backbone.config, "sliding_window", None)}
                    kw["music_block_masks"] = block_masks(kw["cu_seq_lens_q"], batch.input_ids.shape[1], windows)
            else:
                kw = {"attention_mask": batch.attention_mask}
            if self.decoder:
                kw["use_cache"] = False  # the block-diagonal packed mask is built only without a cache
            hidden = self.backbone(input_ids=batch.input_ids, **kw).last_hidden_state
            rewards = self.head.reward(self.score, hidden.reshape(-1, hidden.shape[-1]), batch.spans)
            # a view would lose FSDP2's pre-backward hook on an in-place op: hand out a tensor of its own
            return rewards.clone() if rewards._base is not None else rewards

    return RewardNet()
