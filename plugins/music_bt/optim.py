"""The optimizers ``train.optimizer`` names. The choice decides how much memory a full
fine-tune needs beyond the weights: AdamW keeps two states per parameter in the parameters'
dtype, 8-bit AdamW (bitsandbytes) two one-byte states with block-wise scales, and Adafactor
(torch's own) a factored second moment only: rows + columns per matrix."""

from __future__ import annotations

from typing import Any

OPTIMIZERS = ("adamw", "adamw_8bit", "adafactor")

# bytes of optimizer state per trainable parameter, by optimizer and parameter bytes (the memory
# planner's arithmetic); Adafactor's factored state is counted from the shapes instead
STATE_BYTES = {"adamw": lambda param_bytes: 2 * param_bytes, "adamw_8bit": lambda param_bytes: 2.03,
               "adafactor": lambda param_bytes: 0.0}


def build_optimizer(name: str, groups: list[dict[str, Any]], lr: float, *, fused: bool = False) -> Any:
    import torch

    from music_core.errors import ConfigError, MusicError

    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, **({"fused": True} if fused else {}))
    if name == "adamw_8bit":
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise MusicError("config key 'train.optimizer': adamw_8bit needs bitsandbytes "
                             "(pip install 'music-rm[qlora]')") from None
        return bnb.optim.AdamW8bit(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)
    if name == "adafactor":
        # torch's Adafactor: no first moment, the second moment factored into row and column
        # statistics; lr is used as given (no relative step), weight decay as AdamW's
        return torch.optim.Adafactor(groups, lr=lr)
    raise ConfigError(f"config key 'train.optimizer': {name!r} is not one of {', '.join(OPTIMIZERS)}")


def adafactor_state_elements(shapes: list[tuple[int, ...]]) -> int:
    """Adafactor keeps rows + columns for every matrix and a full second moment for vectors."""
    total = 0
    for s in shapes:
        total += (s[-2] + s[-1]) if len(s) >= 2 else (s[0] if s else 1)
    return total
