"""Save a trained reward model as a Hugging Face ``AutoModelForSequenceClassification`` folder
(num_labels=1, pad_token_id set) that plain transformers loads and scores the same.

The reward head chooses the form (``RewardHead`` in ``music_core.contracts``):

- ``standard``: the backbone's own ``*ForSequenceClassification`` with the weights the head
  names (the paper's last-token head on a decoder, the ``cls`` head on BERT/RoBERTa-style
  encoders); no remote code;
- ``remote-code``: ``modeling_music_rm.py`` plus the head's own code as ``music_head.py``
  (``trust_remote_code=True``).

The folder is written to a staging directory, reloaded with plain transformers and scored on
held-out conversations; only if the scores equal the trainer's own (``TOLERANCE``) do the files
move into place, so a head whose export cannot be reproduced is refused, never saved.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from music_core.data import Message
from music_core.errors import ConfigError, MusicError

REMOTE_CODE = Path(__file__).parent / "modeling_music_rm.py"
TOLERANCE = 1e-4


def choose_pad_id(tok: Any, eom_id: int | None) -> int:
    """A token id that never ends a real sequence: HF's pooling takes the last non-pad token."""
    avoid = {tok.eos_token_id, eom_id, tok.bos_token_id}
    candidates = [tok.pad_token_id, tok.unk_token_id] + list(getattr(tok, "all_special_ids", []))
    for cand in candidates:
        if cand is not None and cand not in avoid:
            return int(cand)
    raise ValueError("the tokenizer has no spare special token to pad with; set tokenizer.pad_token")


def export_form(head: Any, backbone_config: Any) -> str:
    """``standard`` or ``remote-code``, decided before training (on the meta device: no memory);
    a head with neither form is refused here, not after hours of training."""
    import torch
    from transformers import AutoModelForSequenceClassification

    cfg = _classifier_config(backbone_config, pad_id=0)
    try:
        with torch.device("meta"):
            model = AutoModelForSequenceClassification.from_config(cfg)
            module = head.build(backbone_config.hidden_size)
    except ValueError:
        model = None  # the backbone has no *ForSequenceClassification: only remote code can serve it
    if model is not None and head.standard_weights(module, model) is not None:
        return "standard"
    if head.code is not None:
        _check_portable(head)
        return "remote-code"
    raise ConfigError(f"config key 'train.head': reward head {head.name!r} cannot be exported for "
                      f"{backbone_config.model_type}: it names no standard_weights for this backbone and has no "
                      "`code` module to ship (see docs/hooks.md, register_reward_heads)")


def _check_portable(head: Any) -> None:
    """The head's code travels without music: it may import torch and the standard library only."""
    import ast
    import sys

    path = Path(head.code_module().__file__)
    source = path.read_text()
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add("." if node.level else (node.module or "").split(".")[0])
    foreign = sorted(n for n in names if n not in sys.stdlib_module_names and n not in ("torch", "__future__"))
    if foreign:
        raise ConfigError(f"config key 'train.head': reward head {head.name!r}: its code module {path} "
                          f"imports {foreign}; the module ships with the exported model, so it may import only torch "
                          "and the standard library")


@dataclass
class ExportSpec:
    form: str
    head: Any
    eom_id: int | None
    pad_id: int
    max_length: int
    card: str
    metadata: dict[str, Any]


def export(net: Any, tok: Any, out_dir: Path, spec: ExportSpec, trainer_scores: Any,
           probe: list[list[Message]]) -> dict[str, Any]:
    """Write the folder, check it against ``trainer_scores(probe)`` and move it into ``out_dir``.
    Returns what the check measured."""
    stage = out_dir / f".export-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        tok.pad_token = tok.convert_ids_to_tokens(spec.pad_id)
        stats = spec.metadata.get("reward_stats", {})
        if spec.form == "standard":
            _save_standard(net, spec, stage, stats)
        else:
            _save_remote(net, spec, stage, stats)
        tok.save_pretrained(stage)
        meta = {"head": spec.head.name, "head_settings": spec.head.settings(), "export_form": spec.form,
                "remote_code": spec.form == "remote-code", "eom_token_id": spec.eom_id, "max_length": spec.max_length,
                **spec.metadata}
        (stage / "music_rm.json").write_text(json.dumps(meta, indent=2) + "\n")
        (stage / "README.md").write_text(spec.card)
        check = verify(stage, trainer_scores, probe, spec.form)
        for f in sorted(stage.iterdir()):
            os.replace(f, out_dir / f.name)
        if spec.form == "standard":
            for stale in ("modeling_music_rm.py", "music_head.py"):  # from an earlier export of another form
                (out_dir / stale).unlink(missing_ok=True)
        return check
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def verify(folder: Path, trainer_scores: Any, probe: list[list[Message]], form: str) -> dict[str, Any]:
    from .scorer import HFRewardScorer

    if not probe:
        return {"export_checked_conversations": 0}
    expected = trainer_scores(probe)
    got = HFRewardScorer(str(folder), batch_size=4, device="cpu").score(probe)
    worst = max(abs(a - b) for a, b in zip(expected, got))
    if worst > TOLERANCE:
        raise MusicError(f"export refused: the {form} export of this reward head scores differently from training "
                         f"(max difference {worst:.3g} > {TOLERANCE} on {len(probe)} conversations: trainer "
                         f"{[round(x, 4) for x in expected[:4]]}, exported {[round(x, 4) for x in got[:4]]}); "
                         "nothing was written")
    # the trainer's rewards on the probe (the first held-out pairs, chosen then rejected): anyone can
    # recompute them from the folder with the model card's helper
    return {"export_checked_conversations": len(probe), "export_max_abs_difference": worst,
            "export_probe_trainer_rewards": expected}


def _classifier_config(backbone_config: Any, pad_id: int) -> Any:
    cfg = copy.deepcopy(backbone_config)
    cfg.num_labels = 1
    cfg.pad_token_id = pad_id
    cfg.architectures = None
    # vLLM's pooling runner applies a sigmoid to one-label classifiers unless the config says the
    # output is a regression: then /classify and /score return the raw reward, as training made it
    cfg.problem_type = "regression"
    return cfg


def _save_standard(net: Any, spec: ExportSpec, stage: Path, stats: dict[str, float]) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    cfg = _classifier_config(net.backbone.config, spec.pad_id)
    cfg.update(stats)  # OpenRLHF's keys: config.mean, config.std
    model = AutoModelForSequenceClassification.from_config(cfg, dtype=torch.float32)
    base = getattr(model, model.base_model_prefix)
    missing, unexpected = base.load_state_dict(_float_state(net.backbone), strict=False)
    head_weights = spec.head.standard_weights(net.score, model)
    prefix = model.base_model_prefix + "."
    named = {k: v for k, v in head_weights.items() if k.startswith(prefix)}
    # the head may own base-model parts (BERT's pooler): those count as set, not missing
    missing = [m for m in missing if prefix + m not in named and "rotary" not in m]
    # RoBERTa's classifier builds its base without the pooler: the backbone's (unused) pooler drops out
    unexpected = [u for u in unexpected if not u.startswith("pooler.")]
    if unexpected or missing:
        raise MusicError(f"export: backbone weights did not fit the classifier ({missing[:3]}, {unexpected[:3]})")
    own = {k for k in model.state_dict() if not k.startswith(prefix)}
    if own - set(head_weights):
        raise MusicError(f"export: reward head {spec.head.name!r} left classifier weights unset: {sorted(own - set(head_weights))}")
    state = model.state_dict()
    with torch.no_grad():
        for k, v in head_weights.items():
            state[k].copy_(v.detach().float().reshape(state[k].shape))
    model.save_pretrained(stage, safe_serialization=True)


def _save_remote(net: Any, spec: ExportSpec, stage: Path, stats: dict[str, float]) -> None:
    from safetensors.torch import save_file
    from transformers import AutoConfig, PretrainedConfig

    backbone_cfg = net.backbone.config.to_dict()
    cfg = PretrainedConfig.from_dict({"num_labels": 1, "pad_token_id": spec.pad_id, "problem_type": "regression", **stats})
    body = {**cfg.to_dict(), "model_type": "music_reward_model", "architectures": ["MusicRewardModel"],
            "auto_map": {"AutoConfig": "modeling_music_rm.MusicRewardConfig",
                         "AutoModelForSequenceClassification": "modeling_music_rm.MusicRewardModel"},
            "backbone_config": backbone_cfg, "head": spec.head.name, "head_settings": spec.head.settings(),
            "eom_token_id": spec.eom_id, "dtype": "float32"}
    (stage / "config.json").write_text(json.dumps(body, indent=2, default=str) + "\n")
    shutil.copy(REMOTE_CODE, stage / "modeling_music_rm.py")
    shutil.copy(Path(spec.head.code_module().__file__), stage / "music_head.py")
    state = {f"backbone.{k}": v for k, v in _float_state(net.backbone).items()}
    state.update({f"score.{k}": v for k, v in _float_state(net.score).items()})
    save_file({k: v.contiguous() for k, v in state.items()}, str(stage / "model.safetensors"), metadata={"format": "pt"})
    AutoConfig.from_pretrained(stage, trust_remote_code=True)  # the config must load before the weights are trusted


def _float_state(module: Any) -> dict[str, Any]:
    return {k: v.detach().float().cpu() for k, v in module.state_dict().items()}
