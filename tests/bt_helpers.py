"""Tiny random-weight backbones with real tokenizers, so trainer tests run in seconds."""

from __future__ import annotations

import json
from pathlib import Path

# `music train` with every micro-batch's loss delayed by $TEST_STEP_DELAY_S seconds, so that a test's
# SIGKILL has room to land between checkpoints (the delay lives here, not in the training loop).
SLOW_TRAIN_MAIN = (
    "import os, sys, time\n"
    "import music_bt.loop as loop\n"
    "delay, loss = float(os.environ.get('TEST_STEP_DELAY_S') or 0), loop.pair_loss\n"
    "loop.pair_loss = lambda *a, **k: (time.sleep(delay), loss(*a, **k))[1]\n"
    "from music_core.cli import main\n"
    "main(sys.argv[1:])\n"
)


def tiny_decoder(path: Path, layers: int = 2, hidden: int = 64) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaModel

    from music_core.models import resolve_model

    if (path / "config.json").exists():
        return path
    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def tiny_gemma2(path: Path, sliding_window: int = 16) -> Path:
    """Gemma-2's attention quirks in miniature: logit soft-capping and a sliding window shorter
    than the test conversations, on alternate layers."""
    import torch
    from transformers import AutoTokenizer, Gemma2Config, Gemma2Model

    from music_core.models import resolve_model

    if (path / "config.json").exists():
        return path
    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    cfg = Gemma2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=sliding_window,
                       attn_logit_softcapping=5.0, query_pre_attn_scalar=16, max_position_embeddings=2048,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    Gemma2Model(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def tiny_encoder(path: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from music_core.models import resolve_model

    if (path / "config.json").exists():
        return path
    tok = AutoTokenizer.from_pretrained(resolve_model("minilm"))
    cfg = BertConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, max_position_embeddings=512)
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def write_pairs(path: Path, n: int = 24, seed: int = 0) -> Path:
    """Pairs with a learnable signal: the chosen answer keeps the constraint set in turn 1."""
    import random

    rng = random.Random(seed)
    topics = ["cats", "rivers", "tea", "chess", "bridges", "volcanoes", "jazz", "bread", "maps", "owls", "trains", "salt"]
    recs = []
    for i in range(n):
        t = rng.choice(topics)
        prefix = [{"role": "user", "content": f"Always answer in one short sentence. Tell me about {t}."},
                  {"role": "assistant", "content": f"{t.title()} are interesting."},
                  {"role": "user", "content": f"Why do people like {t}? ({i})"}]
        good = f"People like {t} because they are fun."
        bad = f"There are many reasons people like {t}, and " + " ".join(["they matter a great deal to many people"] * 3) + "."
        recs.append({"id": f"p{i}", "chosen": prefix + [{"role": "assistant", "content": good}],
                     "rejected": prefix + [{"role": "assistant", "content": bad}], "source": "test", "meta": {}})
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path
