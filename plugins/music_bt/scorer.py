"""Scoring with an exported reward model through plain transformers."""

from __future__ import annotations

import json
from pathlib import Path

from music_core.contracts import RewardScorer
from music_core.data import Message
from music_core.errors import MusicError


class HFRewardScorer(RewardScorer):
    """Loads ``AutoModelForSequenceClassification`` (remote code when the head needs it),
    formats conversations exactly as training did, and scores length-sorted batches."""

    def __init__(self, model_dir: str, batch_size: int = 16, device: str | None = None):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from music_core.assets import quiet_transformers

        from .encoding import ConversationEncoder

        quiet_transformers()
        path = Path(model_dir)
        spec_path = path / "music_rm.json"
        if not spec_path.exists():
            raise MusicError(f"{path}: not a reward model saved by music (no music_rm.json)")
        self.spec = json.loads(spec_path.read_text())
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        remote = bool(self.spec.get("remote_code"))  # our own modeling file, written at export
        self.tok = AutoTokenizer.from_pretrained(path, trust_remote_code=remote)
        self.model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=remote).to(self.device).eval()
        self.encoder = ConversationEncoder(self.tok, int(self.spec["max_length"]))
        self.batch_size = batch_size
        self.pad_id = self.model.config.pad_token_id

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
