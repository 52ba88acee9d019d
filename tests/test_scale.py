"""The paper's RM at scale, on CPU (issue 14): the packed scorer equals the padded one and does
not depend on its row budget; memory-saving optimizers and bf16 weights train and export;
ZeRO-3 through accelerate + DeepSpeed (its CPU accelerator) matches a plain run; the dry-run
memory plan says what fits. The GPU measurements: benchmarks/gpu_check_scale.sh."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from bt_helpers import tiny_decoder, tiny_encoder, write_pairs
from test_foreign_rm import plain_rm

ROOT = Path(__file__).resolve().parents[1]


def _convs(n: int = 9) -> list[list[dict]]:
    return [[{"role": "user", "content": f"Tell me about item {i}. " + "More detail please. " * i},
             {"role": "assistant", "content": "Here it is: " + "a fact, " * (5 * i + 1)},
             {"role": "user", "content": "And then?"}, {"role": "assistant", "content": "Then " * (i + 1)}]
            for i in range(n)]


def _gemma2_rm(path: Path) -> Path:
    """A tiny Gemma-2 reward model: soft-capped attention and a sliding window (16 tokens) shorter
    than the conversations, on alternate layers."""
    import torch
    from transformers import AutoTokenizer, Gemma2Config, Gemma2ForSequenceClassification

    from music_core.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    cfg = Gemma2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=16,
                       attn_logit_softcapping=5.0, query_pre_attn_scalar=16, max_position_embeddings=2048,
                       num_labels=1, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    Gemma2ForSequenceClassification(cfg).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_packed_scorer_equals_padded_and_does_not_depend_on_its_rows(arch, tmp_path):
    from music_bt.scorer import HFRewardScorer

    rm = plain_rm(tmp_path / "rm") if arch == "llama" else _gemma2_rm(tmp_path / "rm")
    convs = _convs()
    packed = HFRewardScorer(str(rm))
    assert packed.packed, "a decoder with transformers' own head is scored packed by default"
    padded = HFRewardScorer(str(rm), packing=False, batch_size=3).score(convs)
    got = packed.score(convs)
    assert max(abs(a - b) for a, b in zip(got, padded)) <= 1e-4
    small_rows = HFRewardScorer(str(rm), tokens_per_batch=64).score(convs)  # most sequences alone in a row
    assert max(abs(a - b) for a, b in zip(got, small_rows)) <= 1e-4
    assert len({round(x, 5) for x in got}) > 1


def test_encoders_are_scored_padded_and_packing_on_request_names_why(tmp_path):
    from music_bt.scorer import HFRewardScorer
    from transformers import AutoTokenizer, BertForSequenceClassification

    from music_core.errors import MusicError

    enc = tiny_encoder(tmp_path / "enc")
    rm = tmp_path / "bert_rm"
    BertForSequenceClassification.from_pretrained(enc, num_labels=1).save_pretrained(rm)
    AutoTokenizer.from_pretrained(enc).save_pretrained(rm)
    assert not HFRewardScorer(str(rm)).packed
    with pytest.raises(MusicError, match="packed scoring needs a decoder"):
        HFRewardScorer(str(rm), packing=True)


def test_pack_rows_fills_longest_first_and_gives_overlong_sequences_their_own_row():
    from music_bt.scorer import pack_rows

    rows = pack_rows([5, 50, 20, 30, 200], budget=60)
    assert rows[0] == [4]  # longer than the budget: alone
    assert sorted(i for r in rows for i in r) == [0, 1, 2, 3, 4]
    lengths = [5, 50, 20, 30, 200]
    assert all(sum(lengths[i] for i in r) <= 60 for r in rows[1:])


@pytest.mark.parametrize("overrides", [
    ("train.optimizer=adafactor",),
    ("train.optimizer=adamw_8bit",),
    ("train.param_dtype=bf16", "train.precision=bf16"),
])
def test_memory_saving_settings_train_and_export_what_plain_transformers_scores(overrides, tmp_path):
    """Through the CLI (a process of its own: accelerate's precision is process-wide)."""
    import torch

    if "train.optimizer=adamw_8bit" in overrides:
        pytest.importorskip("bitsandbytes", reason="8-bit AdamW needs bitsandbytes (pip install 'music-rm[qlora]')")
    dec = tiny_decoder(tmp_path / "dec")
    data, held = write_pairs(tmp_path / "d.jsonl"), write_pairs(tmp_path / "h.jsonl", n=8, seed=1)
    keys = ["run.progress=false", f"run.output_dir={tmp_path}", f"train.train_data={data}", f"train.eval_data={held}",
            f"train.backbone={dec}", "train.head=last-token", "train.precision=fp32", "train.max_steps=3",
            "train.batch_size=8", "train.lr=1e-3", *overrides]
    out = subprocess.run([sys.executable, "-m", "music_core", "train", *keys], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    m = json.loads((tmp_path / "rm" / "metrics.json").read_text())
    assert m["steps"] == 3 and torch.isfinite(torch.tensor(m["eval_loss"]))
    assert m["export_max_abs_difference"] <= 1e-4  # the export reloads with plain transformers and scores the same
    config = json.loads((tmp_path / "rm" / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "float32"  # bf16 weights are exported in float32


def test_options_name_their_key_when_wrong(tmp_path):
    from music_core.config import load_config
    from music_core.errors import ConfigError

    with pytest.raises(ConfigError, match="train.optimizer"):
        load_config(None, ["train.optimizer=sgd"])
    with pytest.raises(ConfigError, match="train.param_dtype"):
        load_config(None, ["train.param_dtype=bf16", "train.precision=fp32"])


def test_zero3_one_process_on_cpu_matches_a_plain_run(tmp_path):
    """accelerate + DeepSpeed ZeRO-3 (the repo's configs/deepspeed_zero3.yaml, one process) on
    DeepSpeed's CPU accelerator: the same losses as a plain run, and the export gathered from the
    shards scores the held-out conversations as the plain export does."""
    pytest.importorskip("deepspeed", reason="ZeRO-3 needs deepspeed (make install puts it in .venv)")
    from music_bt.scorer import HFRewardScorer

    dec = tiny_decoder(tmp_path / "dec")
    data, held = write_pairs(tmp_path / "d.jsonl"), write_pairs(tmp_path / "h.jsonl", n=8, seed=1)
    keys = ["run.progress=false", f"train.train_data={data}", f"train.eval_data={held}", f"train.backbone={dec}",
            "train.head=last-token", "train.precision=fp32", "train.max_steps=4", "train.batch_size=8",
            "train.tokens_per_micro_batch=256"]
    plain = subprocess.run([sys.executable, "-m", "music_core", "train", *keys, f"run.output_dir={tmp_path / 'plain'}"],
                           capture_output=True, text=True)
    assert plain.returncode == 0, plain.stderr[-2000:]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "configs/deepspeed_zero3.yaml"),
              "--num_processes", "1", "--mixed_precision", "no"]
    z3 = subprocess.run([*launch, "-m", "music_core", "train", *keys, f"run.output_dir={tmp_path / 'z3'}"],
                        capture_output=True, text=True, timeout=600)
    assert z3.returncode == 0, z3.stderr[-3000:]
    a = json.loads((tmp_path / "plain" / "rm" / "metrics.json").read_text())
    b = json.loads((tmp_path / "z3" / "rm" / "metrics.json").read_text())
    assert abs(a["eval_loss"] - b["eval_loss"]) < 1e-5 and abs(a["final_loss"] - b["final_loss"]) < 1e-5
    pairs = [json.loads(line) for line in open(held)]
    convs = [c for p in pairs for c in (p["chosen"], p["rejected"])]
    ra = HFRewardScorer(str(tmp_path / "plain" / "rm")).score(convs)
    rb = HFRewardScorer(str(tmp_path / "z3" / "rm")).score(convs)
    assert max(abs(x - y) for x, y in zip(ra, rb)) <= 1e-4


def test_memory_plan_counts_exactly_and_says_what_fits(tmp_path):
    from music_bt.memory import count
    from transformers import AutoConfig, AutoModel

    dec = tiny_decoder(tmp_path / "dec")
    config = AutoConfig.from_pretrained(dec)
    c = count(config, lora_r=4, lora_targets=["all-linear"])
    model = AutoModel.from_pretrained(dec)
    assert c.params == sum(p.numel() for p in model.parameters())
    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear"))
    assert c.lora_params == sum(p.numel() for p in lora.parameters() if p.requires_grad)

    out = subprocess.run([sys.executable, "-m", "music_core", "run", "--config", str(ROOT / "configs/paper.yaml"), "--dry-run",
                          "train.gpus=1", "train.gpu_memory_gib=79"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    plan = out.stdout
    assert "memory plan for google/gemma-2-9b-it (9.24B parameters" in plan
    configured = next(line for line in plan.splitlines() if line.strip().startswith("configured"))
    assert "DOES NOT FIT" in configured  # fp32 weights + AdamW: ~155 GiB
    assert "train.param_dtype=bf16 train.optimizer=adamw_8bit" in plan  # the first that fits one 80 GB GPU
