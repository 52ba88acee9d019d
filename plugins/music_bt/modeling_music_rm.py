"""Remote code for reward models exported by music (the `music` project, MUSIC: arXiv 2512.24693).

Load with ``AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True)``;
``logits[:, 0]`` is the reward. The reward head's own computation ships beside this file as
``music_head.py`` (the very code training ran); this file turns a padded batch into the spans it
reads: each row's real tokens (from the attention mask) and the end of every assistant turn (the
1st, 3rd, ... end-of-message token counted from the back, as music's encoder finds them).
"""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from .music_head import build, reward


class MusicRewardConfig(PretrainedConfig):
    model_type = "music_reward_model"

    def __init__(self, backbone_config=None, head="", head_settings=None, eom_token_id=None, **kwargs):
        super().__init__(**kwargs)
        self.backbone_config = backbone_config or {}
        self.head = head
        self.head_settings = head_settings or {}
        self.eom_token_id = eom_token_id


class Spans:
    """Where each sequence lies in the flattened ``[batch * length, hidden]`` states."""

    def __init__(self, starts, ends, turn_ends):
        self.starts, self.ends, self.turn_ends = starts, ends, turn_ends

    def __len__(self):
        return len(self.starts)


def assistant_turn_ends(ids, eom_id):
    if eom_id is None:
        return [len(ids) - 1]
    eoms = [i for i, t in enumerate(ids) if t == eom_id]
    ends = sorted(eoms[len(eoms) - 1 - 2 * k] for k in range(len(eoms) // 2))
    return ends or [len(ids) - 1]


def spans_of(input_ids, attention_mask, eom_id):
    width = input_ids.shape[1]
    starts, ends, turn_ends = [], [], []
    for row in range(input_ids.shape[0]):
        real = attention_mask[row].nonzero().flatten().tolist()  # contiguous: left or right padding
        first, last = real[0], real[-1] + 1
        off = row * width + first
        starts.append(off)
        ends.append(row * width + last)
        turn_ends.append([off + t for t in assistant_turn_ends(input_ids[row, first:last].tolist(), eom_id)])
    return Spans(starts, ends, turn_ends)


class MusicRewardModel(PreTrainedModel):
    config_class = MusicRewardConfig
    base_model_prefix = "backbone"

    def __init__(self, config: MusicRewardConfig):
        super().__init__(config)
        bc = dict(config.backbone_config)
        backbone_cfg = AutoConfig.for_model(bc.pop("model_type"), **bc)
        self.backbone = AutoModel.from_config(backbone_cfg)
        self.score = build(backbone_cfg.hidden_size, config.head_settings)
        self.post_init()

    def _init_weights(self, module):
        pass  # every weight is loaded from the checkpoint

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        flat = hidden.reshape(-1, hidden.shape[-1])
        rewards = reward(self.score, flat, spans_of(input_ids, attention_mask, self.config.eom_token_id),
                         self.config.head_settings)
        return SequenceClassifierOutput(logits=rewards.float()[:, None])
