"""Judge verdicts that always count: read from the label token probabilities (the local engine,
OpenAI-compatible servers through the real SDK and the raw transport), text parsing where there
are none, both orders averaged; Best-of-N candidates distinct within a pool; a report that says
how far its table can be trusted."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest
from llm_helpers import KEY
from synth_helpers import scripted_logprobs, scripted_reply, synth_overrides

from music_core import hookimpl
from music_core.config import load_config
from music_core.context import RunContext
from music_core.contracts import Judge, Verdict
from music_core.judging import judge_both_orders
from music_core.plugins import temporary_plugin

SHORT = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "ok"}]
LONG = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a careful, complete and correct answer"}]


@pytest.mark.parametrize("positions,p", [
    ([{"A": math.log(0.6), "B": math.log(0.2), "The": math.log(0.1)}], 0.75),
    ([{" B": math.log(0.5), "**A": math.log(0.5)}], 0.5),
    ([{"\n": -0.01}, {"B": -0.1}], 0.0),          # the label after a newline; A not among the likeliest
    ([{"The": -0.1, "Conversation": -1.0}], None),  # no label offered
    (None, None),                                  # a server that returned no logprobs
])
def test_label_probability(positions, p):
    from music_bon.judge import label_probability

    got = label_probability(positions)
    assert got == p if p is None else abs(got - p) < 1e-9


class Biased(Judge):
    """Says A with probability `bias` whatever it sees, plus `pull` toward the longer dialogue."""

    name = "biased-test"

    def __init__(self, bias, pull):
        super().__init__()
        self.bias, self.pull = bias, pull

    async def compare(self, first, second, llm, prefix_len=0):
        longer = len(json.dumps(first)) > len(json.dumps(second))
        p = self.bias + (self.pull if longer else -self.pull)
        return Verdict("A" if p >= 0.5 else "B", p_first=p, method="logprobs")


def test_probabilities_from_both_orders_cancel_position_bias():
    # always "A" at 0.8: both orders agree on nothing, the averaged preference is 0.5, a tie
    assert asyncio.run(judge_both_orders(Biased(0.8, 0.0), LONG, SHORT, None)).outcome == "tie"
    # the same bias with a real preference underneath: its argmax says A both times (inconsistent),
    # yet the averaged probability still finds the longer dialogue
    judged = asyncio.run(judge_both_orders(Biased(0.7, 0.15), LONG, SHORT, None))
    assert judged.outcome == "a" and abs(judged.p_a - 0.65) < 1e-9 and judged.consistent is False
    assert asyncio.run(judge_both_orders(Biased(0.7, 0.15), SHORT, LONG, None)).outcome == "b"


def _judge_ctx(tmp_path, url, extra=()):
    cfg = load_config(None, synth_overrides(tmp_path, url, "openai", "TEST_KEY") + list(extra))
    return RunContext(cfg)


@pytest.mark.parametrize("http", ["raw", "aiohttp"])
def test_openai_compatible_judge_reads_label_logprobs(tmp_path, monkeypatch, http):
    from music_bon.judge import PairwiseJudge
    from music_openai.testing import openai_server

    monkeypatch.setenv("TEST_KEY", KEY)
    with openai_server(reply=scripted_reply, logprobs=scripted_logprobs) as srv:
        ctx = _judge_ctx(tmp_path, srv.url + "/v1", [f"models.sim.options.http={http}"])

        async def go():
            judge = PairwiseJudge({}, ctx)
            try:
                return await judge_both_orders(judge, LONG, SHORT, ctx.role("judge"))
            finally:
                await ctx.aclose()

        judged = asyncio.run(go())
        bodies = [json.loads(r.body) for r in srv.requests if r.path.endswith("/chat/completions")]
    assert judged.outcome == "a" and judged.consistent
    assert [v.method for v in (judged.first, judged.second)] == ["logprobs", "logprobs"]
    p = 1 / (1 + math.exp(-2.3))  # A at -0.1 against B at -2.4
    assert abs(judged.first.p_first - p) < 1e-6 and abs(judged.second.p_first - (1 - p)) < 1e-6
    assert all(b["logprobs"] is True and b["top_logprobs"] == 20 and b["temperature"] == 0.0 for b in bodies)


def test_a_server_without_logprobs_falls_back_to_text_verdicts(tmp_path, monkeypatch):
    from music_bon.judge import PairwiseJudge
    from music_openai.testing import openai_server

    monkeypatch.setenv("TEST_KEY", KEY)
    with openai_server(reply=scripted_reply, logprobs=lambda *a: None) as srv:
        ctx = _judge_ctx(tmp_path, srv.url + "/v1")

        async def go():
            try:
                return await judge_both_orders(PairwiseJudge({}, ctx), LONG, SHORT, ctx.role("judge"))
            finally:
                await ctx.aclose()

        judged = asyncio.run(go())
    assert judged.outcome == "a"
    assert [v.method for v in (judged.first, judged.second)] == ["text", "text"] and judged.p_a is None


def test_text_verdicts_when_asked(tmp_path, monkeypatch):
    from music_bon.judge import PairwiseJudge
    from music_openai.testing import openai_server

    monkeypatch.setenv("TEST_KEY", KEY)
    with openai_server(reply=scripted_reply, logprobs=scripted_logprobs) as srv:
        ctx = _judge_ctx(tmp_path, srv.url + "/v1")

        async def go():
            try:
                return await PairwiseJudge({"verdict": "text"}, ctx).compare(LONG, SHORT, ctx.role("judge"))
            finally:
                await ctx.aclose()

        verdict = asyncio.run(go())
        assert not any(json.loads(r.body).get("logprobs") for r in srv.requests if r.body)
    assert verdict.method == "text" and verdict.winner == "A"


def test_local_engine_returns_label_probabilities_and_the_judge_always_reads_a_verdict(tmp_path):
    """SmolLM2-135M judging: a verdict from its label probabilities on every call."""
    from music_bon.judge import PairwiseJudge

    cfg = load_config(None, [f"run.output_dir={tmp_path}", "run.progress=false"])
    ctx = RunContext(cfg)
    convs = [[{"role": "user", "content": f"What is {i} plus {i}?"}, {"role": "assistant", "content": a}]
             for i, a in enumerate(["It is two.", "4", "Six, since three and three make six.", "I do not know."])]

    async def go():
        judge = PairwiseJudge({}, ctx)
        llm = ctx.role("judge")
        assert llm.supports_logprobs
        comps = await llm.chat(convs[0], temperature=0.0, max_tokens=2, top_logprobs=5)
        try:
            return comps, await asyncio.gather(*(judge_both_orders(judge, a, b, llm)
                                                 for a, b in zip(convs, convs[1:] + convs[:1])))
        finally:
            await ctx.aclose()

    comps, judged = asyncio.run(go())
    top = comps[0].top_logprobs
    assert top and len(top[0]) == 5 and all(lp <= 0 for lp in top[0].values())
    assert max(top[0].values()) > math.log(0.01)  # real probabilities, not the sampler's noise
    verdicts = [v for j in judged for v in (j.first, j.second)]
    assert all(v.method == "logprobs" and 0.0 <= v.p_first <= 1.0 for v in verdicts)


# ---- Best-of-N: distinct candidates and a report that says what its table is worth -----------------

def repeating_policy(messages, index):
    """Samples 0 and 1 of every request say the same thing; a judge prefers the longer dialogue."""
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    if "impartial judge" in system or "simulating the human user" in system or "getting help from an AI" in system:
        return scripted_reply(messages, index)
    return scripted_reply(messages, 0 if index < 2 else index)


class LengthPlugin:
    @hookimpl
    def register_trainers(self, register):
        from test_hooks import LengthTrainer

        register(LengthTrainer)


def test_best_of_n_candidates_are_distinct_and_the_report_states_its_reliability(tmp_path, monkeypatch, plugins):
    from music_openai.testing import openai_server

    from music_core.evaluation import run_evaluator

    monkeypatch.setenv("TEST_KEY", KEY)
    rms = {}
    for name in ("long", "also"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "music_rm.json").write_text(json.dumps({"trainer": "length-test"}))
        rms[name] = str(tmp_path / name)
    with openai_server(reply=repeating_policy, logprobs=scripted_logprobs, seeded=True) as srv, temporary_plugin(LengthPlugin(), "length"):
        cfg = load_config(None, synth_overrides(tmp_path, srv.url + "/v1", "openai", "TEST_KEY")
                          + ["eval.bon.turns=2", "eval.bon.n=[1,2,4]", "eval.bon.bootstrap=100"])
        out = run_evaluator(RunContext(cfg, plugins.registry), "best-of-n", rms)
    res = json.loads(Path(out["results_path"]).read_text())
    c, j = res["candidates"], res["judge"]
    assert c["repeats_resampled"] > 0 and c["pools_with_repeats_left"] == 0 and c["distinct_pool_share"] == 1.0
    assert j["parse_rate"] == 1.0 and j["verdicts_by_method"] == {"logprobs": j["calls"]}
    assert j["position_consistency"] == 1.0
    md = Path(out["markdown_path"]).read_text()
    assert "judge verdicts read:" in md and "position consistency" in md and "distinct candidates" in md
    # two RMs that pick alike give identical dialogues: those rows are all ties
    assert ("carries no information" in md) != res["information"]["carries_information"]
    assert res["information"]["carries_information"]  # the length-loving RM beats N=1 under a length-loving judge
    pools = [p["candidates"] for x in open(res["dialogues_path"]) for p in json.loads(x)["picks"] if json.loads(x)["n"] > 1]
    assert pools and all(len(set(pool)) == len(pool) for pool in pools)


def test_a_table_of_ties_says_it_carries_no_information():
    from music_bon.bon import information

    rows = [{"prompts": 4, "wins": 0, "ties": 4, "losses": 0, "ci95_low": 0.5, "ci95_high": 0.5}]
    judge = {"judged": 4, "parse_rate": 0.2, "position_consistency": 0.25, "comparisons": 8, "identical_skipped": 4}
    info = information({"rows": rows, "prompts": 4, "judge": judge,
                        "candidates": {"pools_with_repeats_left": 0, "pools": 8}})
    assert not info["carries_information"]
    assert any("every comparison is a tie" in x for x in info["no_information_because"])
    assert any("20%" in x for x in info["no_information_because"])
    assert any("position bias" in w for w in info["warnings"])
