"""One test per hook: a plugin registers a component through the hook and the core uses it
where users would (datasette-style; test_meta.py checks each hook has its test here)."""

from __future__ import annotations

import asyncio
import json

import click
from click.testing import CliRunner

from music_core import hookimpl
from music_core.config import load_config
from music_core.context import RunContext
from music_core.contracts import (
    ContrastOutcome,
    ContrastStrategy,
    EvalReport,
    Evaluator,
    FilterVerdict,
    Judge,
    PairFilter,
    RewardHead,
    RewardScorer,
    SeedSource,
    SimulatedTurn,
    Trainer,
    TrainResult,
    UserSimulator,
    Verdict,
)
from music_core.data import Conversation
from music_core.llm.provider import ChatProvider
from music_core.llm.types import Completion, Usage
from music_core.plugins import temporary_plugin


class EchoProvider(ChatProvider):
    name = "echo-test"
    supports_n = True
    requires_api_key = False

    async def generate(self, call):
        last = call.messages[-1]["content"]
        n = len(call.messages)  # answers depend on how much history they saw
        return [Completion(f"Could you say more about {last[:20]} ({n}, {i})?", "stop", Usage(3, 3)) for i in call.sample_indices]


def echo_ctx(tmp_path, plugins, *extra):
    cfg = load_config(None, [f"run.output_dir={tmp_path}", "run.progress=false", "models.e.provider=echo-test",
                             "models.e.model=x", "roles.user_simulator=e", "roles.assistant_simulator=e",
                             "roles.policy=e", "roles.judge=e", *extra])
    return RunContext(cfg, plugins.registry)


def synth(ctx):
    from music_core.synth.runner import run_synth

    return run_synth(ctx)


class EchoPlugin:
    @hookimpl
    def register_chat_providers(self, register):
        register(EchoProvider)


def test_hook_register_chat_providers(tmp_path, plugins):
    with temporary_plugin(EchoPlugin(), "echo"):
        ctx = echo_ctx(tmp_path, plugins)

        async def go():
            out = await ctx.role("judge").text([{"role": "user", "content": "hello"}])
            await ctx.aclose()
            return out

        assert asyncio.run(go()).startswith("Could you say more about hello")


def test_hook_register_simulators(tmp_path, plugins):
    class Fixed(UserSimulator):
        name = "fixed-test"

        async def next_turn(self, history, llm):
            return SimulatedTurn("And in French, please?")

    class P:
        @hookimpl
        def register_simulators(self, register):
            register(Fixed)

    with temporary_plugin(EchoPlugin(), "echo"), temporary_plugin(P(), "sim"):
        ctx = echo_ctx(tmp_path, plugins, "seeds.limit=2", "synth.turns=2", "synth.user_simulator=fixed-test",
                       "synth.strategy=forget-history", "synth.filter=null")
        synth(ctx)
        pairs = [json.loads(x) for x in open(ctx.synth_output())]
        assert pairs and all(m["content"] == "And in French, please?" for p in pairs
                             for m in p["chosen"][p["meta"]["prefix_messages"]:] if m["role"] == "user")


def test_hook_register_contrast_strategies(tmp_path, plugins):
    class Upper(ContrastStrategy):
        name = "upper-test"

        async def contrast(self, request):
            return ContrastOutcome(request.instruction.upper(), request.instruction.upper(), {})

    class P:
        @hookimpl
        def register_contrast_strategies(self, register):
            register(Upper)

    with temporary_plugin(EchoPlugin(), "echo"), temporary_plugin(P(), "upper"):
        ctx = echo_ctx(tmp_path, plugins, "seeds.limit=2", "synth.turns=1", "synth.strategy=upper-test")
        synth(ctx)
        pairs = [json.loads(x) for x in open(ctx.synth_output())]
        assert all(p["rejected"][-1]["content"] == p["meta"]["turns"][0]["original"].upper() for p in pairs)


def test_hook_register_seed_sources(tmp_path, plugins):
    class Two(SeedSource):
        name = "two-test"

        def load_conversations(self, cfg):
            return [Conversation(f"c{i}", [{"role": "user", "content": f"Question {i}?"}], self.name) for i in range(2)]

    class P:
        @hookimpl
        def register_seed_sources(self, register):
            register(Two)

    with temporary_plugin(EchoPlugin(), "echo"), temporary_plugin(P(), "two"):
        # the echo policy answers both branches alike (final errors): this test is about the seeds
        ctx = echo_ctx(tmp_path, plugins, "seeds.source=two-test", "synth.turns=1", "synth.strategy=forget-history",
                       "synth.filter=null", "synth.max_error_rate=1.0")
        stats = synth(ctx)
        assert stats["seeds"] == 2


def test_hook_register_pair_filters(tmp_path, plugins):
    class Nope(PairFilter):
        name = "nope-test"

        async def keep(self, pair):
            return FilterVerdict(False, "never")

    class P:
        @hookimpl
        def register_pair_filters(self, register):
            register(Nope)

    with temporary_plugin(EchoPlugin(), "echo"), temporary_plugin(P(), "nope"):
        ctx = echo_ctx(tmp_path, plugins, "seeds.limit=2", "synth.turns=1", "synth.filter=nope-test")
        stats = synth(ctx)
        assert stats["filtered"] >= 1 and stats["written"] == 0
        from music_core.synth import report

        assert report.build(ctx.synth_output())["filter_rejection_rate"] == 1.0


def test_hook_register_reward_heads(plugins):
    import torch

    from music_core.contracts import SequenceSpans

    class FirstToken(RewardHead):
        name = "first-token-test"

        def build(self, hidden_size):
            return torch.nn.Linear(hidden_size, 1, bias=False)

        def reward(self, module, hidden, spans):
            return module(hidden[torch.tensor(spans.starts)].float()).squeeze(-1)

    class P:
        @hookimpl
        def register_reward_heads(self, register):
            register(FirstToken)

    with temporary_plugin(P(), "head"):
        head = plugins.registry.create("reward_head", "first-token-test", {})
        module = head.build(4)
        r = head.reward(module, torch.randn(6, 4), SequenceSpans([0, 3], [3, 6], [[2], [5]]))
        assert r.shape == (2,)


class LengthScorer(RewardScorer):
    def score(self, conversations):
        return [float(len(c[-1]["content"])) for c in conversations]


class LengthTrainer(Trainer):
    name = "length-test"

    def train(self, cfg):
        from pathlib import Path

        Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(cfg.output_dir) / "music_rm.json").write_text(json.dumps({"trainer": self.name}))
        return TrainResult(cfg.output_dir, {"eval_accuracy": 1.0})

    def load_scorer(self, model_dir, batch_size=None):
        return LengthScorer()


class LengthPlugin:
    @hookimpl
    def register_trainers(self, register):
        register(LengthTrainer)


def test_hook_register_trainers(tmp_path, plugins):
    from conftest import REPO

    from music_core.training_stage import train_reward_model

    with temporary_plugin(LengthPlugin(), "length"):
        ctx = RunContext(load_config(None, [f"run.output_dir={tmp_path}", "train.trainer=length-test",
                                            f"train.train_data={REPO / 'plugins/music_data/data/pairs.jsonl'}"]),
                         plugins.registry)
        result = train_reward_model(ctx, name="x")
        from music_core.evaluation import load_scorer

        assert isinstance(load_scorer(ctx, result.model_dir), LengthScorer)


def test_hook_register_judges(plugins):
    from music_core.judging import judge_both_orders

    class Longer(Judge):
        name = "longer-test"

        async def compare(self, first, second, llm, prefix_len=0):
            a, b = len(first[-1]["content"]), len(second[-1]["content"])
            return Verdict("A" if a > b else "B" if b > a else "tie")

    class P:
        @hookimpl
        def register_judges(self, register):
            register(Longer)

    with temporary_plugin(P(), "longer"):
        judge = plugins.registry.create("judge", "longer-test", {})
        short = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
        long = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a much longer answer"}]
        assert asyncio.run(judge_both_orders(judge, long, short, None)).outcome == "a"


def test_hook_register_evaluators(tmp_path, plugins):
    class Polite(Evaluator):
        name = "polite-test"
        command = "polite"

        def run(self, reward_models):
            return EvalReport(self.name, {"rms": sorted(reward_models)}, "polite: ok\n")

    class P:
        @hookimpl
        def register_evaluators(self, register):
            register(Polite)

    with temporary_plugin(P(), "polite"):
        from music_core.cli import cli

        result = CliRunner().invoke(cli, ["eval", "polite", f"run.output_dir={tmp_path}", "--rm", "a=/x"])
        assert result.exit_code == 0, result.output
        assert json.loads((tmp_path / "eval" / "polite-test" / "results.json").read_text())["rms"] == ["a"]


def test_hook_register_launchers(plugins, tmp_path):
    from music_core.contracts import Launcher, VariantJob

    started: list[str] = []

    class Recording(Launcher):
        name = "recording-test"

        def launch(self, jobs, parallel):
            started.extend(j.name for j in jobs)
            return [0] * len(jobs)

    class P:
        @hookimpl
        def register_launchers(self, register):
            register(Recording)

    with temporary_plugin(P(), "recording"):
        launcher = plugins.registry.create("launcher", "recording-test", {}, None)
        job = VariantJob("v", ["true"], str(tmp_path), {}, str(tmp_path / "log"))
        assert launcher.launch([job], 1) == [0] and started == ["v"]
        assert "recording-test" in plugins.registry.names("launcher")


def test_hook_register_commands(plugins):
    @click.command("count-test")
    def count():
        click.echo("42")

    class P:
        @hookimpl
        def register_commands(self, register):
            register(count)

    with temporary_plugin(P(), "count"):
        from music_core.cli import cli

        assert CliRunner().invoke(cli, ["count-test"]).output.strip() == "42"
