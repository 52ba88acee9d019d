"""Export round trip: every bundled head, on a decoder and on encoders, and a third-party head
from an installed plugin written from docs/hooks.md, reloads in plain transformers (remote code
only where the head needs it) and scores within 1e-4 of the trainer's own rewards; an export
that cannot be reproduced is refused and writes nothing."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from bt_helpers import tiny_decoder, tiny_encoder, write_pairs
from plugin_helpers import docs_blocks, env_with, install

from music_core.config import load_config
from music_core.context import RunContext


def tiny_roberta(path: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, RobertaConfig, RobertaModel

    from music_core.models import resolve_model

    if (path / "config.json").exists():
        return path
    tok = AutoTokenizer.from_pretrained(resolve_model("minilm"))
    cfg = RobertaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=520, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    RobertaModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"decoder": tiny_decoder(root / "dec"), "encoder": tiny_encoder(root / "enc"),
            "roberta": tiny_roberta(root / "roberta")}


def card_encode(folder: Path):
    """The model card's own scoring helper, executed as a user would copy it."""
    card = (folder / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    code = code.split("tok = AutoTokenizer")[0]  # constants and encode(); the rest loads `path`
    ns: dict = {}
    exec(code, ns)
    return ns["encode"]


def plain_scores(folder: Path, conversations, remote: bool) -> tuple[list[float], str]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=remote)
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=remote).eval()
    encode = card_encode(folder)
    out = []
    with torch.no_grad():
        for c in conversations:
            out.append(float(model(input_ids=torch.tensor([encode(tok, c)])).logits[0, 0]))
    return out, type(model).__name__


def probe_conversations(held: Path, n: int) -> list:
    pairs = [json.loads(x) for x in open(held)][:n]
    return [c for p in pairs for c in (p["chosen"], p["rejected"])]


STANDARD = {("decoder", "last-token"): "LlamaForSequenceClassification",
            ("encoder", "cls"): "BertForSequenceClassification",
            ("roberta", "cls"): "RobertaForSequenceClassification"}


@pytest.mark.parametrize("backbone,head", [("decoder", "last-token"), ("decoder", "mean-pool"), ("decoder", "per-turn"),
                                          ("encoder", "cls"), ("encoder", "last-token"),
                                          ("encoder", "mean-pool"), ("encoder", "per-turn"), ("roberta", "cls")])
def test_every_bundled_head_exports_and_plain_transformers_scores_as_the_trainer(models, plugins, tmp_path, backbone, head):
    from music_core.training_stage import train_reward_model

    data, held = write_pairs(tmp_path / "pairs.jsonl"), write_pairs(tmp_path / "held.jsonl", n=8, seed=1)
    options = ["train.head_options.combine=min"] if head == "per-turn" else []
    cfg = load_config(None, [f"run.output_dir={tmp_path}", "run.progress=false", f"train.train_data={data}",
                             f"train.eval_data={held}", "train.precision=fp32", f"train.backbone={models[backbone]}",
                             f"train.head={head}", "train.max_steps=4", "train.batch_size=8", "train.lr=3e-3",
                             "train.max_length=96", *options])
    result = train_reward_model(RunContext(cfg, plugins.registry))
    out, m = Path(result.model_dir), result.metrics
    spec = json.loads((out / "music_rm.json").read_text())
    standard = (backbone, head) in STANDARD
    assert spec["export_form"] == m["export_form"] == ("standard" if standard else "remote-code")
    assert (out / "modeling_music_rm.py").exists() != standard and (out / "music_head.py").exists() != standard
    card = (out / "README.md").read_text()
    assert ("trust_remote_code=True" in card) != standard and "oldest exchanges" in card
    # the probe holds long conversations (max_length 96): the card's truncation helper must match training
    probe = probe_conversations(held, 4)
    got, cls_name = plain_scores(out, probe, remote=not standard)
    if standard:
        assert cls_name == STANDARD[(backbone, head)]
    assert m["export_checked_conversations"] == 8
    assert max(abs(a - b) for a, b in zip(got, m["export_probe_trainer_rewards"])) <= 1e-4
    config = json.loads((out / "config.json").read_text())
    assert config["num_labels"] == 1 if "num_labels" in config else len(config["id2label"]) == 1
    assert abs(config["mean"] - m["eval_reward_mean"]) < 1e-9 and config["std"] > 0  # OpenRLHF's keys
    assert not list(out.glob(".export-*"))


def test_default_head_on_minilm_is_the_standard_bert_classifier(plugins, tmp_path):
    from music_core.training_stage import train_reward_model

    data, held = write_pairs(tmp_path / "pairs.jsonl"), write_pairs(tmp_path / "held.jsonl", n=4, seed=1)
    cfg = load_config(None, [f"run.output_dir={tmp_path}", "run.progress=false", f"train.train_data={data}",
                             f"train.eval_data={held}", "train.max_steps=2", "train.batch_size=4",
                             "train.precision=fp32"])
    assert cfg.train.head == "auto" and cfg.train.backbone == "minilm"
    result = train_reward_model(RunContext(cfg, plugins.registry))
    assert result.metrics["head"] == "cls" and result.metrics["export_form"] == "standard"
    got, cls_name = plain_scores(Path(result.model_dir), probe_conversations(held, 2), remote=False)
    assert cls_name == "BertForSequenceClassification"
    assert max(abs(a - b) for a, b in zip(got, result.metrics["export_probe_trainer_rewards"])) <= 1e-4


# ---- third-party heads, installed as a distribution with an entry point ------------------------

def docs_head_plugin() -> tuple[str, str]:
    """The two files docs/hooks.md gives for a reward-head plugin, verbatim."""
    blocks = docs_blocks("register_reward_heads")
    assert len(blocks) == 2, "docs/hooks.md: register_reward_heads gives the code module and the plugin"
    return blocks[0], blocks[1]


def run_train(tmp_path: Path, site: Path, dec: Path, head: str, out: str):
    data, held = write_pairs(tmp_path / "pairs.jsonl"), write_pairs(tmp_path / "held.jsonl", n=8, seed=1)
    env = env_with(site)
    cmd = [sys.executable, "-m", "music_core", "train", f"run.output_dir={tmp_path / out}", "run.progress=false",
           f"train.train_data={data}", f"train.eval_data={held}", f"train.backbone={dec}", f"train.head={head}",
           "train.precision=fp32", "train.max_steps=3", "train.batch_size=8", "train.lr=3e-3"]
    return subprocess.run(cmd, capture_output=True, text=True, env=env), tmp_path / out / "rm", held


def test_third_party_head_from_the_docs_exports_exactly(models, tmp_path):
    code, plugin = docs_head_plugin()
    site = tmp_path / "site"
    install(site, "my_heads", {"__init__.py": plugin, "max_pool_code.py": code})
    proc, out, held = run_train(tmp_path, site, models["decoder"], "max-pool", "run")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "trust_remote_code=True" in proc.stderr  # said at train time
    assert (out / "music_head.py").read_text() == code  # the head's own code, shipped
    m = json.loads((out / "metrics.json").read_text())
    got, _ = plain_scores(out, probe_conversations(held, 4), remote=True)
    assert max(abs(a - b) for a, b in zip(got, m["export_probe_trainer_rewards"])) <= 1e-4


BAD_HEADS = '''
import torch
from music_core import hookimpl
from music_core.contracts import RewardHead
from . import pool_code


class NoExport(RewardHead):
    name = "no-export"

    def build(self, hidden_size):
        return torch.nn.Linear(hidden_size, 1, bias=False)

    def reward(self, module, hidden, spans):
        return module(hidden[[e - 1 for e in spans.ends]].float()).squeeze(-1)


class Drifting(RewardHead):
    """Trains with one pooling but ships code for another: its export cannot reproduce training."""
    name = "drifting"
    code = pool_code

    def reward(self, module, hidden, spans):
        return module(hidden[[s for s in spans.starts]].float()).squeeze(-1)


class Unportable(RewardHead):
    name = "unportable"
    code = bad_code


@hookimpl
def register_reward_heads(register):
    register(NoExport)
    register(Drifting)
    register(Unportable)
'''.replace("from . import pool_code", "from . import bad_code, pool_code")

POOL_CODE = '''import torch


def build(hidden_size, settings):
    return torch.nn.Linear(hidden_size, 1, bias=False)


def reward(module, hidden, spans, settings):
    return module(hidden[[e - 1 for e in spans.ends]].float()).squeeze(-1)
'''


@pytest.mark.parametrize("head,says", [
    ("no-export", "cannot be exported"),
    ("unportable", "may import only torch"),
    ("drifting", "export refused"),
])
def test_a_head_whose_export_cannot_be_reproduced_is_refused_and_writes_nothing(models, tmp_path, head, says):
    site = tmp_path / "site"
    install(site, "bad_heads", {"__init__.py": BAD_HEADS, "pool_code.py": POOL_CODE,
                                "bad_code.py": "import numpy\n" + POOL_CODE})
    proc, out, _ = run_train(tmp_path, site, models["decoder"], head, "run")
    assert proc.returncode != 0 and says in proc.stderr, proc.stderr[-2000:]
    assert "train.head" in proc.stderr or head == "drifting"
    assert not (out / "config.json").exists() and not (out / "model.safetensors").exists()
    assert not list(out.glob(".export-*")) if out.exists() else True
    if head != "drifting":  # refused before training: not one step was taken
        assert not (out / "train_log.jsonl").exists()
