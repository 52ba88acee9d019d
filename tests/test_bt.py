"""The Bradley-Terry trainer: multi-turn encoding, heads, packing vs padding, parameter
updates, export that plain transformers scores the same, exact resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bt_helpers import SLOW_TRAIN_MAIN, tiny_decoder, tiny_encoder, tiny_gemma2, write_pairs

from music_core.config import load_config
from music_core.context import RunContext


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"decoder": tiny_decoder(root / "dec"), "encoder": tiny_encoder(root / "enc"),
            "gemma2": tiny_gemma2(root / "gemma2")}


def train(tmp_path, plugins, *overrides):
    from music_core.training_stage import train_reward_model

    data = write_pairs(tmp_path / "pairs.jsonl")
    held = write_pairs(tmp_path / "held.jsonl", n=8, seed=1)
    cfg = load_config(None, [f"run.output_dir={tmp_path}", "run.progress=false", f"train.train_data={data}",
                             f"train.eval_data={held}", "train.precision=fp32", *overrides])
    return train_reward_model(RunContext(cfg, plugins.registry))


# ---- encoding ------------------------------------------------------------------------------

def test_no_double_bos_and_reward_position_from_mask(plugins):
    from music_bt.batching import PairExample, padded
    from music_bt.encoding import ConversationEncoder
    from transformers import AutoTokenizer

    from music_core.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    enc = ConversationEncoder(tok, 256)
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    ids = enc.encode(msgs).ids
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>") and ids[1] != ids[0]  # one BOS, not two
    assert tok.pad_token_id == tok.eos_token_id  # SmolLM2 pads with its EOS ...
    e1, e2 = enc.encode(msgs), enc.encode(msgs + [{"role": "user", "content": "more"}, {"role": "assistant", "content": "sure"}])
    mb = padded([PairExample(0, e1, e2)], pad_id=tok.eos_token_id)
    # ... and the reward position still comes from the mask: the last real token, not a pad
    assert mb.spans.ends[0] - 1 == len(e1.ids) - 1
    assert mb.input_ids.view(-1)[mb.spans.ends[0] - 1] == e1.ids[-1]


def test_overlong_conversation_drops_oldest_turns_and_is_counted():
    from music_bt.encoding import ConversationEncoder, TruncationStats, encode_pair
    from transformers import AutoTokenizer

    from music_core.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("minilm"))
    enc = ConversationEncoder(tok, 48)
    sys_msg = [{"role": "system", "content": "be kind"}]
    turns = []
    for i in range(6):
        turns += [{"role": "user", "content": f"question number {i} about things"},
                  {"role": "assistant", "content": f"answer number {i} about things"}]
    stats = TruncationStats()
    c, r = encode_pair(enc, sys_msg + turns, sys_msg + turns[:-1] + [{"role": "assistant", "content": "other"}], stats)
    assert len(c.ids) <= 48 and c.dropped_turns >= 1 and stats.shortened == 2 and stats.dropped_turns >= 2
    text = tok.decode(c.ids)
    assert "be kind" in text and "answer number 5" in text and "question number 0" not in text


def test_lint_flags_reward_position_inside_shared_prefix():
    from music_bt.encoding import ConversationEncoder, TruncationStats, encode_pair
    from transformers import AutoTokenizer

    from music_core.models import resolve_model

    enc = ConversationEncoder(AutoTokenizer.from_pretrained(resolve_model("minilm")), 64)
    same = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    stats = TruncationStats()
    encode_pair(enc, same, same, stats)
    assert stats.shared_reward_position == 1


# ---- heads and batching ----------------------------------------------------------------------

def _net(path, head_name, plugins, attention="sdpa"):
    import torch
    from music_bt.model import load_backbone, reward_net

    backbone = load_backbone(str(path), dtype=torch.float32, attention=attention, gradient_checkpointing=False,
                             packing=True).eval()
    head = plugins.registry.create("reward_head", head_name, {})
    torch.manual_seed(0)
    return reward_net(backbone, head, head.build(backbone.config.hidden_size)).eval()


def _examples(path, n=6):
    from music_bt.data import encode_pairs
    from music_bt.encoding import ConversationEncoder, TruncationStats
    from transformers import AutoTokenizer

    from music_core.data import PreferencePair
    from music_core.jsonl import read_records

    data = write_pairs(Path(str(path) + "-pairs.jsonl"), n=n)
    enc = ConversationEncoder(AutoTokenizer.from_pretrained(path), 256)
    return encode_pairs(enc, read_records(data, PreferencePair.from_dict), TruncationStats()), enc


def test_padded_micro_batches_cut_where_padding_is_least_and_keep_the_budget():
    """An encoder's step of short and long pairs is not padded to its longest pair in one
    micro-batch (the offline run's music RM computed 58% padding): sorted by length, the pairs
    are cut where rows x longest, plus a micro-batch's fixed cost, is least."""
    from music_bt.batching import PairExample, group_by_tokens
    from music_bt.encoding import Encoded

    lengths = [500, 480, 120, 100, 90, 80, 60, 40]
    pairs = [PairExample(i, Encoded(list(range(n)), []), Encoded(list(range(n - 10)), [])) for i, n in enumerate(lengths)]

    def computed(groups):
        return sum(2 * len(g) * max(len(p.chosen.ids) for p in g) for g in groups)

    groups = group_by_tokens(pairs, 8192, padded=True, overhead_tokens=64)
    assert sorted(p.index for g in groups for p in g) == list(range(8))
    assert [sorted(len(p.chosen.ids) for p in g) for g in groups][0] == [480, 500]
    assert computed(groups) < 0.5 * computed([pairs])
    assert all(2 * len(g) * max(len(p.chosen.ids) for p in g) <= 1000 for g in group_by_tokens(pairs, 1000, True))
    assert len(group_by_tokens(pairs, 8192, padded=True, overhead_tokens=10**6)) == 1  # a GPU: one wide batch
    assert [len(g) for g in group_by_tokens(pairs[:1], 10, padded=True)] == [1]  # over budget alone still trains


@pytest.mark.parametrize("head", ["last-token", "mean-pool", "per-turn"])
def test_packed_and_padded_give_the_same_rewards(models, plugins, head):
    import torch
    from music_bt.batching import packed, padded

    net = _net(models["decoder"], head, plugins)
    varlen = _net(models["decoder"], head, plugins, attention="varlen")
    examples, _ = _examples(models["decoder"])
    with torch.no_grad():
        a = net(packed(examples))  # sdpa over the block-diagonal mask transformers builds
        v = varlen(packed(examples))  # each packed sequence attended on its own
        b = net(padded(examples, pad_id=0))
        singles = torch.cat([net(padded([e], pad_id=0)) for e in examples])
    assert (a - b).abs().max() <= 1e-4 and (v - b).abs().max() <= 1e-4
    assert (b - singles).abs().max() <= 1e-4  # batched and single scoring agree


@pytest.mark.parametrize("model,attention", [("decoder", "sdpa"), ("decoder", "varlen"), ("gemma2", "flex"),
                                             ("gemma2", "varlen")])
def test_a_row_filled_to_a_fixed_shape_gives_the_same_rewards_and_gradients(models, plugins, model, attention):
    """train.fixed_row_shape: the filler is sequences of its own, so no real token attends to it."""
    import torch
    from music_bt.batching import packed

    examples, _ = _examples(models[model])
    real = sum(e.tokens for e in examples)
    filled = packed(examples, row_tokens=real + 300, pad_id=0)
    assert filled.input_ids.shape[1] == real + 300 and filled.real_tokens == real
    longest = max(max(len(e.chosen.ids), len(e.rejected.ids)) for e in examples)
    assert int(filled.position_ids.max()) < longest  # the filler restarts its positions
    assert packed(examples, row_tokens=real - 1).input_ids.shape[1] == real  # an overfull row is never cut
    net = _net(models[model], "per-turn", plugins, attention=attention)
    with torch.set_grad_enabled(attention != "flex"):  # flex attention's backward is GPU-only
        ref = net(packed(examples))
        got = net(filled)
        assert (got - ref).abs().max() <= 1e-5
        if attention != "flex":
            grads = torch.autograd.grad(ref.sum(), [p for p in net.parameters() if p.requires_grad])
            again = torch.autograd.grad(got.sum(), [p for p in net.parameters() if p.requires_grad])
            assert all(torch.allclose(a, b, atol=1e-5, rtol=1e-4) for a, b in zip(grads, again))


@pytest.mark.parametrize("attention", ["flex", "varlen"])
def test_packed_softcapped_sliding_window_attention_matches_eager(models, plugins, attention):
    """Gemma-2's soft-capping and sliding window, packed (music_flex: a document-causal block mask
    with the cap as a score_mod; music_varlen: per sequence) against the model's own eager
    attention on padded batches; with gradients where the kernel has a CPU backward (flex
    attention's backward is GPU-only: benchmarks/flex_probe.py checks it there)."""
    import torch
    from music_bt.batching import packed, padded

    examples, _ = _examples(models["gemma2"])
    assert max(len(e.chosen.ids) for e in examples) > 16  # longer than the window: it must bite
    eager = _net(models["gemma2"], "per-turn", plugins, attention="eager")
    fast = _net(models["gemma2"], "per-turn", plugins, attention=attention)
    assert fast.backbone.config._attn_implementation == f"music_{attention}"
    with torch.set_grad_enabled(attention == "varlen"):
        ref = eager(padded(examples, pad_id=0))
        got = fast(packed(examples))
    assert (got - ref).abs().max() <= 1e-4
    if attention == "varlen":
        ref.sum().backward()
        got.sum().backward()
        for (name, a), b in zip(eager.named_parameters(), fast.parameters()):
            assert torch.allclose(a.grad, b.grad, atol=1e-4, rtol=1e-3), name
    with torch.no_grad():  # padded batches through music_flex take the model's eager attention
        assert (fast(padded(examples, pad_id=0)) - ref).abs().max() <= 1e-4


def _full_blocks(mask):
    """(query block, kv block) pairs a BlockMask marks fully visible (their mask is skipped)."""
    counts, indices = mask.full_kv_num_blocks[0, 0], mask.full_kv_indices[0, 0]
    return {(i, int(j)) for i in range(len(counts)) for j in indices[i, : counts[i]]}


@pytest.mark.parametrize("window", [None, 16, 130])
def test_flex_block_masks_from_boundaries_equal_create_block_mask(window):
    """music_flex derives its block masks from sequence boundaries at block granularity; they
    must equal what torch's create_block_mask evaluates token by token, full blocks included
    (a block wrongly marked full would skip the mask), and attend identically."""
    import random

    import torch
    from music_bt import flex
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    rng = random.Random(window or 0)
    for _ in range(4):
        lengths = [rng.randrange(1, 300) for _ in range(rng.randrange(1, 7))]
        total = sum(lengths)
        cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
        got = flex.block_masks(cu, total, {window})[window]
        doc = torch.bucketize(torch.arange(total), cu[1:].long(), right=True)

        def mask_mod(b, h, q, kv, doc=doc):
            ok = (doc[q] == doc[kv]) & (q >= kv)
            return ok & (q - kv < window) if window else ok

        ref = create_block_mask(mask_mod, 1, None, total, total, device="cpu")
        assert torch.equal(got.to_dense(), ref.to_dense())
        assert _full_blocks(got) == _full_blocks(ref)
        q, k, v = (torch.randn(1, 2, total, 16) for _ in range(3))
        assert (flex_attention(q, k, v, block_mask=got) - flex_attention(q, k, v, block_mask=ref)).abs().max() < 1e-5


def test_every_trainable_parameter_changes_after_a_step(models, plugins, tmp_path):
    import torch
    from music_bt.batching import packed
    from music_bt.loop import pair_loss

    net = _net(models["decoder"], "last-token", plugins).train()
    before = {n: p.detach().clone() for n, p in net.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    examples, _ = _examples(models["decoder"])
    r = net(packed(examples))
    loss, _, _ = pair_loss(r, torch.zeros(len(examples)), None)
    loss.mean().backward()
    opt.step()
    unchanged = [n for n, p in net.named_parameters() if p.requires_grad and torch.equal(before[n], p.detach())]
    assert not unchanged, unchanged


# ---- training, export, resume ---------------------------------------------------------------

# export round trips: tests/test_export.py


def test_default_minilm_trains_above_chance_on_learnable_pairs(plugins, tmp_path):
    result = train(tmp_path, plugins, "train.max_steps=12", "train.batch_size=8", "train.lr=2e-4")
    assert result.metrics["eval_accuracy"] > 0.5 and result.metrics["final_accuracy"] > 0.5
    log = [json.loads(x) for x in open(Path(result.model_dir) / "train_log.jsonl")]
    assert {"loss", "accuracy", "margin", "reward_mean", "reward_std", "tokens_per_s", "num_tokens"} <= set(log[0])


def _train_cmd(out, data, held, dec, steps=8, extra=()):
    return [sys.executable, "-c", SLOW_TRAIN_MAIN, "train", f"run.output_dir={out}", "run.progress=false",
            f"train.train_data={data}", f"train.eval_data={held}", f"train.backbone={dec}", "train.head=last-token",
            "train.precision=fp32", f"train.max_steps={steps}", "train.batch_size=4", "train.save_every=2",
            "train.log_every=1", *extra]


def _kill_after_checkpoint(run, cmd, env, step=4):
    """Start a training, SIGKILL it once checkpoint ``step`` is on disk."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not list((run / "rm" / "checkpoints").glob(f"step-{step:07d}")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_killed_and_resumed_training_ends_with_the_same_metrics(models, tmp_path):
    data, held = write_pairs(tmp_path / "d.jsonl"), write_pairs(tmp_path / "h.jsonl", n=8, seed=1)
    dec = tiny_decoder(tmp_path / "slowdec", layers=6)
    env = {**os.environ, "TEST_STEP_DELAY_S": "0.4"}  # room to kill between checkpoints
    subprocess.run(_train_cmd(tmp_path / "ref", data, held, dec), check=True, capture_output=True, env=env)
    ref = json.loads((tmp_path / "ref" / "rm" / "metrics.json").read_text())
    run = tmp_path / "run"
    _kill_after_checkpoint(run, _train_cmd(run, data, held, dec), env)
    assert not (run / "rm" / "metrics.json").exists(), "the kill must land before the end"
    subprocess.run(_train_cmd(run, data, held, dec), check=True, capture_output=True, env=env)
    got = json.loads((run / "rm" / "metrics.json").read_text())
    assert got["resumed_from_step"] >= 4
    for key in ("eval_loss", "eval_accuracy", "eval_margin", "final_loss"):
        assert abs(got[key] - ref[key]) < 1e-6, key
    ref_log = [json.loads(x) for x in open(tmp_path / "ref" / "rm" / "train_log.jsonl")]
    got_log = [json.loads(x) for x in open(run / "rm" / "train_log.jsonl")]
    assert [r["step"] for r in got_log] == [r["step"] for r in ref_log]
    assert all(abs(a["loss"] - b["loss"]) < 1e-6 for a, b in zip(got_log, ref_log))


def test_ddp_under_accelerate_launch_matches_one_process(models, tmp_path):
    """Two CPU processes (gloo) split each step's micro-batches; the loss is scaled so the
    summed gradient equals one process's, so the runs agree."""
    data, held = write_pairs(tmp_path / "d.jsonl"), write_pairs(tmp_path / "h.jsonl", n=8, seed=1)
    args = ["-m", "music_core", "train", "run.progress=false", f"train.train_data={data}", f"train.eval_data={held}",
            f"train.backbone={models['decoder']}", "train.head=last-token", "train.precision=fp32", "train.max_steps=4",
            "train.batch_size=8", "train.tokens_per_micro_batch=256"]
    subprocess.run([sys.executable, *args, f"run.output_dir={tmp_path / 'one'}"], check=True, capture_output=True)
    # --multi_gpu is accelerate's torchrun launcher; `--cpu --num_processes 2` would start one process
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no"]
    out = subprocess.run([*launch, *args, f"run.output_dir={tmp_path / 'two'}"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    one = json.loads((tmp_path / "one" / "rm" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "rm" / "metrics.json").read_text())
    assert two["distributed"] == "multi_cpu, 2 processes", two["distributed"]  # two processes, not one twice
    assert abs(one["eval_loss"] - two["eval_loss"]) < 1e-4 and abs(one["final_loss"] - two["final_loss"]) < 1e-4


def test_lora_trains_adapters_and_head_and_exports_a_plain_model(models, plugins, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification

    result = train(tmp_path, plugins, f"train.backbone={models['decoder']}", "train.head=last-token",
                   "train.lora.enabled=true", "train.lora.r=4", "train.max_steps=4", "train.batch_size=8", "train.lr=5e-3")
    model = AutoModelForSequenceClassification.from_pretrained(result.model_dir)  # merged: no peft needed
    assert not any("lora" in n for n, _ in model.named_parameters())
    assert result.metrics["steps"] == 4 and torch.isfinite(torch.tensor(result.metrics["eval_loss"]))


def test_fixed_row_shape_with_compiled_layers_trains_as_the_varying_rows_do(models, plugins, tmp_path):
    """train.fixed_row_shape fills each micro-batch to the budget so compiled layers keep one shape;
    the losses are those of the unfilled rows."""
    common = [f"train.backbone={models['decoder']}", "train.head=last-token", "train.max_steps=3", "train.batch_size=4",
              "train.tokens_per_micro_batch=512", "train.lr=5e-3", "train.compile=true"]
    (tmp_path / "plain").mkdir()
    (tmp_path / "fixed").mkdir()
    plain = train(tmp_path / "plain", plugins, *common).metrics
    fixed = train(tmp_path / "fixed", plugins, *common, "train.fixed_row_shape=true").metrics
    assert abs(plain["final_loss"] - fixed["final_loss"]) < 1e-5 and abs(plain["eval_loss"] - fixed["eval_loss"]) < 1e-5


def test_qlora_trains_adapters_on_a_4bit_backbone_and_exports_full_precision(models, plugins, tmp_path):
    """QLoRA on CPU (bitsandbytes' 4-bit layers run on CPU): the backbone trains as NF4 weights
    with LoRA adapters; the export merges the adapters into the full-precision base, so plain
    transformers loads it without peft or bitsandbytes."""
    pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes (pip install 'music[qlora]')")
    import torch
    from transformers import AutoModelForSequenceClassification

    result = train(tmp_path, plugins, f"train.backbone={models['decoder']}", "train.head=last-token",
                   "train.lora.enabled=true", "train.lora.quantize_4bit=true", "train.lora.r=4",
                   "train.max_steps=3", "train.batch_size=8", "train.lr=5e-3")
    cfg = json.loads((Path(result.model_dir) / "config.json").read_text())
    assert "quantization_config" not in cfg
    model = AutoModelForSequenceClassification.from_pretrained(result.model_dir).eval()
    assert not any("lora" in n for n, _ in model.named_parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    base = AutoModelForSequenceClassification.from_pretrained(models["decoder"], num_labels=1)
    q = dict(model.named_parameters())["model.layers.0.self_attn.q_proj.weight"]
    assert not torch.equal(q, dict(base.named_parameters())["model.layers.0.self_attn.q_proj.weight"])  # merged
    assert result.metrics["four_bit_linear_layers"] == 2 * 7  # q k v o gate up down in each of 2 layers
    assert result.metrics["steps"] == 3 and torch.isfinite(torch.tensor(result.metrics["eval_loss"]))


def test_qlora_without_lora_is_a_clear_config_error(models, plugins, tmp_path):
    from music_core.errors import ConfigError

    with pytest.raises(ConfigError, match="train.lora.quantize_4bit.*train.lora.enabled=true"):
        train(tmp_path, plugins, f"train.backbone={models['decoder']}", "train.lora.quantize_4bit=true",
              "train.max_steps=1")


def test_a_changed_config_or_data_never_resumes_silently(models, tmp_path):
    """A checkpoint made with another learning rate (or other data) is not resumed: training
    starts fresh and says what changed; the logging window survives a resume."""
    data, held = write_pairs(tmp_path / "d.jsonl"), write_pairs(tmp_path / "h.jsonl", n=8, seed=1)
    dec = tiny_decoder(tmp_path / "slowdec", layers=6)
    env = {**os.environ, "TEST_STEP_DELAY_S": "0.4"}
    run = tmp_path / "run"
    base = ["train.log_every=3"]
    _kill_after_checkpoint(run, _train_cmd(run, data, held, dec, extra=base), env)
    changed = subprocess.run(_train_cmd(run, data, held, dec, extra=[*base, "train.lr=3e-4", "train.batch_size=2"]),
                             capture_output=True, text=True, env=env)
    assert changed.returncode == 0, changed.stderr
    assert "not resuming" in changed.stderr and "train.lr" in changed.stderr and "train.batch_size" in changed.stderr
    assert json.loads((run / "rm" / "metrics.json").read_text())["resumed_from_step"] == 0
    assert not (run / "rm" / "checkpoints").exists()  # a finished training keeps only its export

    # the logging window (log_every=3, checkpoints every 2 steps) is part of the checkpoint
    subprocess.run(_train_cmd(tmp_path / "ref", data, held, dec, extra=base), check=True, capture_output=True, env=env)
    ref = json.loads((tmp_path / "ref" / "rm" / "metrics.json").read_text())
    again = tmp_path / "again"
    _kill_after_checkpoint(again, _train_cmd(again, data, held, dec, extra=base), env)
    subprocess.run(_train_cmd(again, data, held, dec, extra=base), check=True, capture_output=True, env=env)
    got = json.loads((again / "rm" / "metrics.json").read_text())
    assert got["resumed_from_step"] >= 4 and abs(got["final_loss"] - ref["final_loss"]) < 1e-6

    # other training data under the same path: also a fresh start
    data_run = tmp_path / "data-run"
    _kill_after_checkpoint(data_run, _train_cmd(data_run, data, held, dec, extra=base), env)
    write_pairs(data, seed=5)  # the same file, new content
    fresh = subprocess.run(_train_cmd(data_run, data, held, dec, extra=base), capture_output=True, text=True, env=env)
    assert fresh.returncode == 0 and "train_data_sha256" in fresh.stderr
    assert json.loads((data_run / "rm" / "metrics.json").read_text())["resumed_from_step"] == 0
