"""Save a trained reward model as a Hugging Face ``AutoModelForSequenceClassification`` folder
(num_labels=1, pad_token_id set) that plain transformers loads and scores the same:

- the paper's last-token head on a decoder saves as the backbone's own
  ``*ForSequenceClassification`` (its pooling is "last non-pad token", and the pad token is
  chosen so that it never ends a real conversation);
- every other head saves with remote code (``modeling_music_rm.py``, loaded with
  ``trust_remote_code=True``) that pools exactly as training did.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

REMOTE_CODE = Path(__file__).parent / "modeling_music_rm.py"


def choose_pad_id(tok: Any, eom_id: int) -> int:
    """A token id that never ends a real sequence: HF's pooling takes the last non-pad token."""
    avoid = {tok.eos_token_id, eom_id, tok.bos_token_id}
    candidates = [tok.pad_token_id, tok.unk_token_id] + list(getattr(tok, "all_special_ids", []))
    for cand in candidates:
        if cand is not None and cand not in avoid:
            return int(cand)
    raise ValueError("the tokenizer has no spare special token to pad with; set tokenizer.pad_token")


def export(net: Any, tok: Any, *, out_dir: Path, head_name: str, pooling: str, combine: str | None, eom_id: int,
           pad_id: int, max_length: int, native: bool, card: str, extra: dict[str, Any]) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    out_dir.mkdir(parents=True, exist_ok=True)
    backbone = net.backbone
    tok.pad_token = tok.convert_ids_to_tokens(pad_id)
    spec = {"head": head_name, "pooling": pooling, "combine": combine, "eom_token_id": eom_id,
            "max_length": max_length, "remote_code": not native, **extra}
    if native:
        cfg = copy.deepcopy(backbone.config)
        cfg.num_labels = 1
        cfg.pad_token_id = pad_id
        cfg.architectures = None
        model = AutoModelForSequenceClassification.from_config(cfg, dtype=torch.float32)
        base = getattr(model, model.base_model_prefix)
        missing, unexpected = base.load_state_dict(_float_state(backbone), strict=False)
        if unexpected or [m for m in missing if "rotary" not in m]:
            raise RuntimeError(f"export: backbone weights did not fit the classifier ({missing[:3]}, {unexpected[:3]})")
        with torch.no_grad():
            model.score.weight.copy_(net.score.weight.float())
        model.save_pretrained(out_dir, safe_serialization=True)
    else:
        import importlib.util
        import sys

        spec_mod = importlib.util.spec_from_file_location("modeling_music_rm", REMOTE_CODE)
        mod = importlib.util.module_from_spec(spec_mod)
        sys.modules.setdefault("modeling_music_rm", mod)
        spec_mod.loader.exec_module(mod)  # type: ignore[union-attr]
        cfg = mod.MusicRewardConfig(backbone_config=backbone.config.to_dict(), pooling=pooling, combine=combine or "mean",
                                    eom_token_id=eom_id, pad_token_id=pad_id, num_labels=1)
        cfg.auto_map = {"AutoConfig": "modeling_music_rm.MusicRewardConfig",
                        "AutoModelForSequenceClassification": "modeling_music_rm.MusicRewardModel"}
        model = mod.MusicRewardModel(cfg)
        model.backbone.load_state_dict(_float_state(backbone))
        with torch.no_grad():
            model.score.weight.copy_(net.score.weight.float())
        model.save_pretrained(out_dir, safe_serialization=True)
        shutil.copy(REMOTE_CODE, out_dir / "modeling_music_rm.py")
    tok.save_pretrained(out_dir)
    (out_dir / "music_rm.json").write_text(json.dumps(spec, indent=2) + "\n")
    (out_dir / "README.md").write_text(card)


def _float_state(module: Any) -> dict[str, Any]:
    return {k: v.detach().float().cpu() for k, v in module.state_dict().items()}
