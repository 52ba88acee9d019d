"""Any Hugging Face reward model in (issue 11): a folder saved by plain transformers, with no
``music_rm.json``, is evaluated by every evaluator through the CLI, and its scores do not depend
on the batch size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from llm_helpers import KEY
from synth_helpers import scripted_reply, synth_overrides

FIX = Path(__file__).parent / "fixtures"


def plain_rm(path: Path, *, trl_layout: bool = False) -> Path:
    """A tiny Llama reward model saved by transformers alone (the SmolLM2 tokenizer and chat
    template); ``trl_layout`` adds what TRL's RewardTrainer writes beside it (a model card and
    the trainer's config keys)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    from music_core.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, num_labels=1,
                      pad_token_id=tok.pad_token_id)
    model = LlamaForSequenceClassification(cfg).eval()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    if trl_layout:
        (path / "README.md").write_text("---\nlibrary_name: transformers\ntags: [trl, reward-trainer]\n---\n")
        cfg_json = json.loads((path / "config.json").read_text())
        cfg_json["architectures"] = ["LlamaForSequenceClassification"]
        (path / "config.json").write_text(json.dumps(cfg_json))
    assert not (path / "music_rm.json").exists()
    return path


@pytest.fixture(scope="module")
def rms(tmp_path_factory):
    root = tmp_path_factory.mktemp("rms")
    return {"plain": plain_rm(root / "plain"), "trl": plain_rm(root / "trl", trl_layout=True)}


def test_scores_do_not_depend_on_batch_size(rms):
    from music_bt.scorer import HFRewardScorer

    convs = [[{"role": "user", "content": "Hi" * (i + 1)}, {"role": "assistant", "content": "Hello there " * (3 * i + 1)}]
             for i in range(7)]
    one = HFRewardScorer(str(rms["plain"]), batch_size=1).score(convs)
    many = HFRewardScorer(str(rms["plain"]), batch_size=16).score(convs)
    assert max(abs(a - b) for a, b in zip(one, many)) <= 1e-4
    assert len(set(round(x, 6) for x in one)) > 1


def _eval(tmp_path, command, rm, *extra, env=None):
    cmd = [sys.executable, "-m", "music_core", "eval", command, "--rm", f"x={rm}", f"run.output_dir={tmp_path}",
           "run.progress=false", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env or os.environ, timeout=600)


@pytest.mark.parametrize("layout", ["plain", "trl"])
def test_every_evaluator_takes_a_plain_transformers_rm(layout, rms, tmp_path):
    from music_openai.testing import openai_server

    rm = rms[layout]
    pw = _eval(tmp_path, "pairwise", rm, f"eval.pairwise.data={FIX / 'skywork.jsonl'}")
    assert pw.returncode == 0, pw.stderr
    res = json.loads((tmp_path / "eval" / "pairwise-accuracy" / "results.json").read_text())
    assert 0.0 <= res["models"]["x"]["accuracy"] <= 1.0
    rb = _eval(tmp_path, "rewardbench", rm, "eval.rewardbench.path=builtin")
    assert rb.returncode == 0, rb.stderr
    res = json.loads((tmp_path / "eval" / "rewardbench" / "results.json").read_text())
    assert set(res["models"]["x"]["sections"]) >= {"Chat", "Overall"}
    env = {**os.environ, "TEST_KEY": KEY}
    with openai_server(reply=scripted_reply) as srv:
        bon = _eval(tmp_path, "bon", rm, *[o for o in synth_overrides(tmp_path, srv.url + "/v1", "openai", "TEST_KEY")
                                           if not o.startswith("run.")],
                    "eval.bon.turns=1", "eval.bon.n=[1,2]", "eval.bon.bootstrap=50", "eval.bon.prompt_sets.p.limit=3",
                    env=env)
    assert bon.returncode == 0, bon.stderr
    res = json.loads((tmp_path / "eval" / "best-of-n" / "results.json").read_text())
    assert res["rows"] and all(r["prompts"] == 3 for r in res["rows"])


def test_a_folder_that_is_not_a_reward_model_is_a_clear_error(tmp_path):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, num_labels=3)
    LlamaForSequenceClassification(cfg).save_pretrained(tmp_path / "clf")
    proc = _eval(tmp_path, "pairwise", tmp_path / "clf", f"eval.pairwise.data={FIX / 'skywork.jsonl'}")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "clf" in proc.stderr
