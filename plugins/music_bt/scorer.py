"""Scoring with an exported reward model through plain transformers."""

from __future__ import annotations

import json
from pathlib import Path

from music_core.contracts import RewardScorer
from music_core.data import Message
from music_core.errors import MusicError

DEFAULT_MAX_LENGTH = 4096  # for RMs that say nothing: RewardBench's own scripts use 2048-4096


class HFRewardScorer(RewardScorer):
    """Any Hugging Face sequence-classification reward model (``num_labels == 1``): a folder
    ``music train`` wrote, one saved by plain transformers or TRL's RewardTrainer, or a hub id.
    Conversations are formatted with the model's own chat template (as RewardBench does), the
    reward is read at the last real token, batches are length-sorted and right-padded, so a
    score does not depend on the batch size. ``music_rm.json``, where present, adds what
    ``music train`` recorded (max length, remote code for custom heads)."""

    def __init__(self, model_dir: str, batch_size: int = 16, device: str | None = None):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from music_core.assets import quiet_transformers

        from .encoding import ConversationEncoder

        quiet_transformers()
        path = Path(model_dir)
        spec_path = path / "music_rm.json"
        self.spec = json.loads(spec_path.read_text()) if spec_path.exists() else {}
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        remote = bool(self.spec.get("remote_code"))  # our own modeling file, written at export
        try:
            self.tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=remote)
            model = AutoModelForSequenceClassification.from_pretrained(model_dir, trust_remote_code=remote)
        except (OSError, ValueError) as exc:
            raise MusicError(f"cannot load reward model {model_dir!r} as AutoModelForSequenceClassification: "
                             f"{str(exc).splitlines()[0]}") from None
        if model.config.num_labels != 1:
            raise MusicError(f"{model_dir}: a reward model has one output (num_labels == 1); this one has "
                             f"{model.config.num_labels}")
        if model.config.pad_token_id is None:  # needed to find the last real token in a batch
            model.config.pad_token_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id
        if model.config.pad_token_id is None:
            raise MusicError(f"{model_dir}: neither the model config nor the tokenizer names a pad or EOS token")
        self.model = model.to(self.device).eval()
        self.encoder = ConversationEncoder(self.tok, int(self.spec.get("max_length") or self._max_length()))
        self.batch_size = batch_size
        self.pad_id = self.model.config.pad_token_id

    def _max_length(self) -> int:
        limits = [DEFAULT_MAX_LENGTH, getattr(self.model.config, "max_position_embeddings", None),
                  self.tok.model_max_length if self.tok.model_max_length < 1e6 else None]
        return min(x for x in limits if x)

    def score(self, conversations: list[list[Message]]) -> list[float]:
        import torch

        encoded = [self.encoder.encode(c).ids for c in conversations]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        out = [0.0] * len(encoded)
        for k in range(0, len(order), self.batch_size):
            idx = order[k:k + self.batch_size]
            width = max(len(encoded[i]) for i in idx)
            ids = torch.full((len(idx), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                ids[row, : len(encoded[i])] = torch.tensor(encoded[i])
                mask[row, : len(encoded[i])] = 1
            with torch.no_grad():
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            for row, i in enumerate(idx):
                out[i] = float(logits[row, 0])
        return out
