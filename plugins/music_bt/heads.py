"""The bundled reward heads. Each one's computation lives in a torch-only module under
``head_code`` (run in training, shipped with an export that needs remote code); the classes here
add options and say which weights make a backbone's own ``*ForSequenceClassification`` compute
the same reward (the standard export, no remote code)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from music_core.config.schema import OptionError
from music_core.contracts import RewardHead


def _linear_of(model: Any, name: str, out_features: int = 1) -> Any:
    import torch

    layer = getattr(model, name, None)
    return layer if isinstance(layer, torch.nn.Linear) and layer.out_features == out_features else None


class LastTokenHead(RewardHead):
    """The paper's head. On a decoder it is exactly the standard ``*ForSequenceClassification``
    (its ``score`` layer reads the last non-pad token)."""

    name = "last-token"
    description = "linear score of the conversation's last token (the paper's; standard export on decoders)"
    code = "music_bt.head_code.last_token"

    def standard_weights(self, module: Any, model: Any) -> dict[str, Any] | None:
        from .model import is_decoder

        score = _linear_of(model, "score")
        if not is_decoder(model.config) or score is None or score.bias is not None:
            return None
        return {"score.weight": module.weight}


class ClsHead(RewardHead):
    """An encoder's own classification head (first token, dense + tanh, linear with bias): BERT
    and RoBERTa-style models export as their standard ``*ForSequenceClassification``."""

    name = "cls"
    description = "the encoder's own classifier on the first token (standard export on BERT/RoBERTa-style encoders)"
    code = "music_bt.head_code.cls_pooler"

    def standard_weights(self, module: Any, model: Any) -> dict[str, Any] | None:
        from .model import is_decoder

        if is_decoder(model.config):
            return None
        dense, out = module[0], module[2]
        base = getattr(model, model.base_model_prefix, None)
        pooler = getattr(base, "pooler", None)
        classifier = getattr(model, "classifier", None)
        if pooler is not None and _linear_of(model, "classifier") is not None and _linear_of(pooler, "dense", dense.out_features):
            # BERT: classifier(dropout(tanh(pooler.dense(h[0]))))
            p = f"{model.base_model_prefix}.pooler.dense"
            return {f"{p}.weight": dense.weight, f"{p}.bias": dense.bias,
                    "classifier.weight": out.weight, "classifier.bias": out.bias}
        if classifier is not None and _linear_of(classifier, "out_proj") is not None \
                and type(classifier).__name__.startswith(("Roberta", "XLMRoberta")):
            # RoBERTa: out_proj(tanh(dense(h[0]))) (its dropout is off when scoring)
            return {"classifier.dense.weight": dense.weight, "classifier.dense.bias": dense.bias,
                    "classifier.out_proj.weight": out.weight, "classifier.out_proj.bias": out.bias}
        return None


class MeanPoolHead(RewardHead):
    """Mean of every token's hidden state, then linear (remote-code export)."""

    name = "mean-pool"
    description = "linear score of the mean hidden state (encoders; exports with remote code)"
    code = "music_bt.head_code.mean_pool"


@dataclass
class PerTurnOptions:
    combine: str = "mean"  # mean | min | last

    def __post_init__(self) -> None:
        if self.combine not in ("mean", "min", "last"):
            raise OptionError("combine", "must be mean, min or last")


class PerTurnHead(RewardHead):
    """Scores the end of every assistant turn and combines them: a conversation is only as good
    as its turns (``min``), on average (``mean``), or as its last (``last``)."""

    name = "per-turn"
    options_class = PerTurnOptions
    description = "scores every assistant turn's end, combined by mean, min or last (exports with remote code)"
    code = "music_bt.head_code.per_turn"

    def settings(self) -> dict[str, Any]:
        return asdict(self.opts)
