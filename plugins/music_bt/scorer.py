"""Scoring with an exported reward model through plain transformers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from music_core.contracts import RewardScorer, Seen
from music_core.data import Message
from music_core.errors import MusicError
from music_core.packed import EncodedConversation

DEFAULT_MAX_LENGTH = 4096  # for RMs that say nothing: RewardBench's own scripts use 2048-4096
DEFAULT_TOKENS_PER_BATCH = 16384  # packed tokens per forward pass (the training default's order)


class HFRewardScorer(RewardScorer):
    """Any Hugging Face sequence-classification reward model (``num_labels == 1``): a folder
    ``music train`` wrote, one saved by plain transformers or TRL's RewardTrainer, or a hub id.
    Conversations are formatted with the model's own chat template (as RewardBench does), the
    reward is read at the last real token, and a score does not depend on the batch size.

    Decoders with transformers' own classification head (``LlamaForSequenceClassification``,
    ``Gemma2ForSequenceClassification``, ...) are scored **packed**, with the boundaries training
    uses: sequences concatenated into rows of ``tokens_per_batch`` tokens whose position ids
    restart, each attending only to itself (``music_varlen`` on CPU, ``music_flex`` on GPU), so
    no pad token is computed. Everything else (encoders, remote-code heads, ``packing=False``) is
    scored padded: length-sorted batches of ``batch_size`` right-padded sequences.
    ``music_rm.json``, where present, adds what ``music train`` recorded (max length, remote code
    for custom heads)."""

    def __init__(self, model_dir: str, batch_size: int = 16, device: str | None = None,
                 packing: bool | str = "auto", tokens_per_batch: int = DEFAULT_TOKENS_PER_BATCH):
        import torch
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        from music_core.models import quiet_transformers

        from .encoding import ConversationEncoder

        quiet_transformers()
        path = Path(model_dir)
        spec_path = path / "music_rm.json"
        self.spec = json.loads(spec_path.read_text()) if spec_path.exists() else {}
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        remote = bool(self.spec.get("remote_code"))  # our own modeling file, written at export
        try:
            self.tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=remote)
            config = AutoConfig.from_pretrained(model_dir, trust_remote_code=remote)
            kwargs: dict[str, Any] = {}
            if packing and not remote and _packable_config(config):
                kwargs["attn_implementation"] = _packed_attention(self.device, config)
            model = AutoModelForSequenceClassification.from_pretrained(model_dir, trust_remote_code=remote, **kwargs)
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
        self.tokens_per_batch = tokens_per_batch
        self.pad_id = self.model.config.pad_token_id
        self.packed = "attn_implementation" in kwargs and _generic_head(self.model)
        if packing is True and not self.packed:
            raise MusicError(f"{model_dir}: packed scoring needs a decoder with transformers' own classification "
                             f"head; this is {type(self.model).__name__}")

    @classmethod
    def for_model(cls, model: Any, *, pad_id: int, max_length: int = DEFAULT_MAX_LENGTH, batch_size: int = 16,
                  tokens_per_batch: int = DEFAULT_TOKENS_PER_BATCH, packed: bool = False) -> HFRewardScorer:
        """A scorer around a model already in memory (``score_ids`` only: no tokenizer), as the
        benchmarks build one at shapes no folder holds. ``packed`` needs the model loaded with
        ``music_varlen`` or ``music_flex`` attention."""
        self = cls.__new__(cls)
        self.spec, self.model, self.pad_id, self.batch_size = {}, model.eval(), pad_id, batch_size
        self.tokens_per_batch, self.device = tokens_per_batch, model.device
        self.packed = packed and _generic_head(model)
        return self

    def _max_length(self) -> int:
        limits = [DEFAULT_MAX_LENGTH, getattr(self.model.config, "max_position_embeddings", None),
                  self.tok.model_max_length if self.tok.model_max_length < 1e6 else None]
        return min(x for x in limits if x)

    # the packed-scorer protocol (music_core.packed), which `music serve` batches through
    @property
    def max_length(self) -> int:
        return int(self.encoder.max_length)

    def encode(self, conversation: list[Message]) -> EncodedConversation:
        e = self.encoder.encode(conversation)
        return EncodedConversation(e.ids, bool(e.dropped_turns or e.cut_tokens), e.dropped_turns > 0)

    def tokenize(self, text: str) -> list[int]:
        return self.encoder.tokenize(text)

    def score(self, conversations: list[list[Message]]) -> list[float]:
        return self.score_ids([self.encoder.encode(c).ids for c in conversations])

    def score_seen(self, conversations: list[list[Message]]) -> tuple[list[float], list[Seen] | None]:
        encoded = [self.encoder.encode(c) for c in conversations]
        seen = [Seen(len(e.ids), bool(e.dropped_turns or e.cut_tokens), e.dropped_turns > 0) for e in encoded]
        return self.score_ids([e.ids for e in encoded]), seen

    def limits(self) -> dict[str, Any]:
        backbone = [x for x in (getattr(self.model.config, "max_position_embeddings", None),
                                self.tok.model_max_length if self.tok.model_max_length < 1e6 else None) if x]
        return {"max_length": self.encoder.max_length, "backbone_max_length": min(backbone) if backbone else None}

    def score_ids(self, encoded: list[list[int]]) -> list[float]:
        """Rewards of already-encoded sequences (the benchmarks and the export check use this)."""
        return self._score_packed(encoded) if self.packed else self._score_padded(encoded)

    def _score_padded(self, encoded: list[list[int]]) -> list[float]:
        import torch

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

    def _score_packed(self, encoded: list[list[int]]) -> list[float]:
        import torch

        backbone = getattr(self.model, self.model.base_model_prefix)
        impl = backbone.config._attn_implementation
        windows = {None, getattr(backbone.config, "sliding_window", None)}
        out = [0.0] * len(encoded)
        for row in pack_rows([len(e) for e in encoded], self.tokens_per_batch):
            ids: list[int] = []
            pos: list[int] = []
            ends: list[int] = []
            reward_at: list[int] = []
            for i in row:
                start = len(ids)
                ids += encoded[i]
                pos += range(len(encoded[i]))
                ends.append(len(ids))
                reward_at.append(start + _last_real(encoded[i], self.pad_id))
            cu = torch.tensor([0] + ends, dtype=torch.int32, device=self.device)
            kw: dict[str, Any] = {"position_ids": torch.tensor([pos], device=self.device), "cu_seq_lens_q": cu,
                                  "use_cache": False}
            if impl == "music_flex":  # one block mask per attention window for all layers of this row
                from .flex import block_masks

                kw["music_block_masks"] = block_masks(cu, len(ids), windows)
            with torch.no_grad():
                hidden = backbone(input_ids=torch.tensor([ids], device=self.device), **kw).last_hidden_state[0]
                rewards = self.model.score(hidden[torch.tensor(reward_at, device=self.device)])[:, 0].float().tolist()
            for i, r in zip(row, rewards):
                out[i] = r
        return out


def pack_rows(lengths: list[int], budget: int) -> list[list[int]]:
    """Indices grouped into rows of at most ``budget`` tokens, longest first, each row filled in
    turn (a sequence longer than the budget gets a row of its own). A sequence's reward does
    not depend on its row: it attends only to itself."""
    rows: list[list[int]] = []
    used = 0
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if not rows or used + lengths[i] > budget:
            rows.append([])
            used = 0
        rows[-1].append(i)
        used += lengths[i]
    return rows


def _last_real(ids: list[int], pad_id: int) -> int:
    """transformers' rule for the reward position: the last token that is not the pad token
    (a conversation that ends with EOS where EOS is the pad token is read before it)."""
    for k in range(len(ids) - 1, -1, -1):
        if ids[k] != pad_id:
            return k
    return 0


def _packable_config(config: Any) -> bool:
    from .model import is_decoder

    return is_decoder(config) and any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))


def _generic_head(model: Any) -> bool:
    """transformers' shared decoder classification head: the backbone under ``base_model_prefix``,
    a ``score`` linear layer, the reward read at the last non-pad token."""
    try:
        from transformers.modeling_layers import GenericForSequenceClassification
    except ImportError:
        return False
    return isinstance(model, GenericForSequenceClassification)


def _packed_attention(device: str, config: Any = None) -> str:
    """GPU: flex attention (its block mask skips the empty blocks); its Triton kernels need a head
    dimension of at least 16, so smaller heads (toy models) and CPUs attend per sequence."""
    from . import flex, varlen

    heads = getattr(config, "num_attention_heads", 1) or 1
    head_dim = (getattr(config, "head_dim", None) or getattr(config, "hidden_size", 16) // heads) if config else 16
    module = flex if str(device).startswith("cuda") and head_dim >= 16 else varlen
    module.register()
    return module.NAME
