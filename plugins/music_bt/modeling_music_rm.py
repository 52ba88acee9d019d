"""Remote code for reward models exported by music (https://github.com/ -- the `music` project).

Load with ``AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True)``.
``logits[:, 0]`` is the reward. Pooling matches training exactly:

- ``last``: the last real token (from the attention mask);
- ``mean``: the mean over real tokens;
- ``turns``: the end-of-message token of every assistant turn (the 1st, 3rd, ... counted
  from the back), scored and combined by mean, min or last.
"""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput


class MusicRewardConfig(PretrainedConfig):
    model_type = "music_reward_model"

    def __init__(self, backbone_config=None, pooling="last", combine="mean", eom_token_id=None, **kwargs):
        super().__init__(**kwargs)
        self.backbone_config = backbone_config or {}
        self.pooling = pooling
        self.combine = combine
        self.eom_token_id = eom_token_id


class MusicRewardModel(PreTrainedModel):
    config_class = MusicRewardConfig
    base_model_prefix = "backbone"

    def __init__(self, config: MusicRewardConfig):
        super().__init__(config)
        bc = dict(config.backbone_config)
        backbone_cfg = AutoConfig.for_model(bc.pop("model_type"), **bc)
        self.backbone = AutoModel.from_config(backbone_cfg)
        self.score = torch.nn.Linear(backbone_cfg.hidden_size, 1, bias=False)
        self.post_init()

    def _init_weights(self, module):
        pass  # every weight is loaded from the checkpoint

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state.float()
        mask = attention_mask.bool()
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        pooling = self.config.pooling
        if pooling == "mean":
            summed = (hidden * mask[..., None]).sum(1)
            reward = self.score(summed / mask.sum(1, keepdim=True).float()).squeeze(-1)
        elif pooling == "turns":
            rewards = []
            for b in range(input_ids.shape[0]):
                ids = input_ids[b][mask[b]]
                eoms = (ids == self.config.eom_token_id).nonzero().flatten().tolist()
                ends = sorted(eoms[len(eoms) - 1 - 2 * k] for k in range(len(eoms) // 2)) or [len(ids) - 1]
                s = self.score(hidden[b][mask[b]][ends]).squeeze(-1)
                how = self.config.combine
                rewards.append(s.mean() if how == "mean" else s.min() if how == "min" else s[-1])
            reward = torch.stack(rewards)
        else:
            last = mask.long().cumsum(1).argmax(1)  # index of the last real token
            reward = self.score(hidden[rows, last]).squeeze(-1)
        return SequenceClassifierOutput(logits=reward[:, None])
