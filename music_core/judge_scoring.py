"""LLM judges scored beside the reward models, in every pairwise evaluator: does the RM beat
simply asking a strong model?

``eval.judges`` (``--judge NAME=ENDPOINT``) names chat endpoints (under ``models``); each becomes
the role ``judge:NAME``, so its calls are cached, retried, rate-limited, booked and priced like any
role's. An evaluator hands :func:`beside` its items as (chosen, rejected) conversations, in the
order of its RMs' hits, and gets one more row per judge: accuracy on the same items with its
interval, the judge's position flips, and every RM compared with it on those items
(:func:`music_core.stats.paired_difference`).

The judge is the registered judge ``eval.judge`` (default ``pairwise``), run in both orders by
:func:`music_core.judging.judge_both_orders` (label-token probabilities where the endpoint gives
them). A judge earns 1 when it prefers chosen in both orders, 0 when it prefers rejected in
both, and 0.5 otherwise, as an RM's tie does: a position flip (the same position preferred in
both orders), a tie, a probability within the judge's tie margin, or no readable verdict.

Verdicts are kept like the audit's: one record per distinct item, appended as soon as it is
judged, under ``<eval>/<evaluator>/judges/NAME.jsonl`` and keyed by what made it (judge,
options, templates, the endpoint's model and sampling). A rerun judges only what is missing and
the call cache answers every call a killed run made; a transient failure is never recorded (the
next run judges that item; this one ends with exit 75 after writing its report); a misconfigured
endpoint stops the run at once, naming it, as do first verdicts that are all unreadable.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .data import Message, common_prefix_length, content_hash
from .errors import MusicError
from .stats import RESAMPLES, accuracy, paired_difference, say_paired, wilson

if TYPE_CHECKING:
    from .context import RunContext

ROLE_PREFIX = "judge:"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
UNREADABLE_STOP = 12  # the first this many verdicts all unreadable: a wrong model, template or endpoint
PROMPT_TOKENS = 300   # the judge's template, without the two conversations

Pair = tuple[list[Message], list[Message]]


class JudgeUnreadable(MusicError):
    """A judge endpoint gave no verdict that could be read: stops the run, as a misconfigured
    endpoint does, with nothing recorded."""

    exit_code = 5


class JudgesIncomplete(MusicError):
    """Some items are unjudged after transient failures; rerunning the same command judges them."""

    exit_code = 75


def role(name: str) -> str:
    """The role a judge's calls are booked to."""
    return f"{ROLE_PREFIX}{name}"


def configured(cfg: Any) -> dict[str, str]:
    """``eval.judges``: judge name -> endpoint name."""
    return {str(k): str(v) for k, v in (getattr(cfg.eval, "judges", None) or {}).items()}


def estimate(cfg: Any, add: Any, items: float, conversation_tokens: float = 300) -> None:
    """Book each judge's calls for ``music run --dry-run``: two per item (both orders), each
    showing both conversations (``conversation_tokens`` each, as the evaluator guesses)."""
    for name in configured(cfg):
        add(role(name), 2 * items, 2 * items, PROMPT_TOKENS + 2 * conversation_tokens)


def local_records(path: str | None) -> int | None:
    """Lines of a local JSONL file (None: not a local JSONL file), for estimates."""
    if not path or not str(path).endswith(".jsonl") or not Path(path).is_file():
        return None
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def hit_of(judged: Any) -> tuple[float, str]:
    """What a both-orders judgement of (chosen, rejected) earns, and how the audit reads it
    (valid, invalid, flip, tie, unparsed)."""
    from .judging import classify

    verdict = classify(judged)
    if verdict == "valid":
        return (0.5 if judged.p_a is not None and judged.outcome == "tie" else 1.0), verdict
    if verdict == "invalid":
        return (0.5 if judged.p_a is not None and judged.outcome == "tie" else 0.0), verdict
    return 0.5, verdict


@dataclass
class JudgeScores:
    """One judge on an evaluator's items: ``hits[i]`` for item i (None: not judged this run,
    after a transient failure) and ``verdicts[i]`` as the audit names them."""

    name: str
    endpoint: dict[str, Any]
    hits: list[float | None]
    verdicts: list[str | None]
    file: str
    wire_calls: int = 0
    transient: dict[str, int] = field(default_factory=dict)

    @property
    def missing(self) -> int:
        return sum(h is None for h in self.hits)


def judge_hash(ctx: RunContext, judge: Any, endpoint: str) -> str:
    """Everything that changes a verdict: the judge with its options and templates, and the
    endpoint's model and sampling (its URL and key do not)."""
    c = ctx.config
    ep = c.models[endpoint]
    return content_hash("eval-judge", judge.name, dict(c.eval.judge_options), getattr(judge, "template_tags", None),
                        {"provider": ep.provider, "model": ep.model, "temperature": ep.temperature, "top_p": ep.top_p,
                         "max_tokens": ep.max_tokens, "options": dict(ep.options)})


def _key(pair: Pair) -> str:
    return content_hash(pair[0], pair[1])


async def _judge_one(ctx: RunContext, evaluator: str, name: str, pairs: Sequence[Pair]) -> JudgeScores:
    from . import progress
    from .jsonl import AppendOnlyJsonl, iter_json_lines
    from .judging import judge_both_orders
    from .llm.errors import EndpointFatalError, LLMError

    c = ctx.config
    endpoint = configured(c)[name]
    ep = c.models[endpoint]
    described = {"judge": name, "endpoint": endpoint, "provider": ep.provider, "model": ep.model}
    judge = ctx.component("judge", c.eval.judge, c.eval.judge_options)
    ctx.llm.preflight([role(name)])  # a missing key stops the run before any call
    h = judge_hash(ctx, judge, endpoint)
    path = ctx.paths.eval_dir(evaluator) / "judges" / f"{name}.jsonl"
    keys = [_key(p) for p in pairs]
    out = AppendOnlyJsonl(path, counts=lambda row: row.get("judge_hash") == h)
    todo = {k: p for k, p in zip(keys, pairs) if k not in out.done_ids}
    llm = ctx.role(role(name))
    sem = asyncio.Semaphore(len(todo) if ep.mode == "batch" else max(1, 2 * ep.concurrency))
    held: list[dict[str, Any]] = []  # records waiting for the judge's first readable verdict
    state: dict[str, Any] = {"readable": False, "unread": 0, "last": ""}
    transient: Counter[str] = Counter()
    unique = len(set(keys))
    task = progress.Task(f"judge {name} ({evaluator})", total=unique, unit="items", detail=ctx.llm.totals,
                         completed=unique - len(todo))
    wire_before = ctx.llm.usage[role(name)].wire_calls

    def keep(record: dict[str, Any], judged: Any) -> None:
        if judged.judged:
            for v in (judged.first, judged.second):
                if v.method != "unparsed":
                    state["readable"] = True
                else:
                    state["unread"], state["last"] = state["unread"] + 1, v.raw
        held.append(record)
        if state["readable"]:
            for r in held:
                out.append(r)
            held.clear()
        elif state["unread"] >= UNREADABLE_STOP:
            raise unreadable()

    def unreadable() -> JudgeUnreadable:
        return JudgeUnreadable(
            f"judge endpoint {endpoint!r} (eval.judges.{name}, provider {ep.provider}, model {ep.model}) gave no "
            f"readable verdict in its first {state['unread']} answers (the last began {state['last'][:120]!r}). Fix "
            f"models.{endpoint} or the judge's template (eval.judge_options); nothing was recorded")

    async def one(key: str, pair: Pair) -> None:
        from .judging import p_chosen

        async with sem:
            try:
                judged = await judge_both_orders(judge, pair[0], pair[1], llm, common_prefix_length(*pair))
            except LLMError as exc:
                if isinstance(exc, EndpointFatalError) or not exc.retryable:
                    raise
                transient[exc.kind] += 1  # nothing recorded: the next run judges this item
                return
        score, verdict = hit_of(judged)
        keep({"id": key, "hit": score, "verdict": verdict, "p_chosen": p_chosen(judged), "judge_hash": h,
              **described, "judgement": judged.to_dict()}, judged)
        task.advance(1)

    from .tasks import cancel_all, until_first_failure

    tasks = [asyncio.ensure_future(one(k, p)) for k, p in todo.items()]
    try:
        await until_first_failure(tasks)
        if held and not state["readable"]:
            raise unreadable()
    finally:
        await cancel_all(tasks)
        out.close()
        task.close()
    latest: dict[str, dict[str, Any]] = {}
    for _, row in iter_json_lines(path):
        if isinstance(row, dict) and row.get("judge_hash") == h:
            latest[str(row["id"])] = row
    return JudgeScores(name, described, [latest[k]["hit"] if k in latest else None for k in keys],
                       [latest[k]["verdict"] if k in latest else None for k in keys], str(path),
                       ctx.llm.usage[role(name)].wire_calls - wire_before, dict(transient))


def score_judges(ctx: RunContext, evaluator: str, pairs: Sequence[Pair]) -> dict[str, JudgeScores]:
    """Every configured judge on ``pairs`` (chosen, rejected), one after another."""
    names = configured(ctx.config)
    if not names or not pairs:
        return {}

    async def go() -> dict[str, JudgeScores]:
        try:
            return {name: await _judge_one(ctx, evaluator, name, pairs) for name in names}
        finally:
            await ctx.aclose()

    return asyncio.run(go())


def beside(ctx: RunContext, evaluator: str, pairs: Sequence[Pair], rm_hits: Mapping[str, Sequence[float]], *,
           bootstrap: int = RESAMPLES, seed: int = 0, ids: Sequence[str] | None = None) -> dict[str, Any] | None:
    """The judges' block of an evaluator's results (None: no judge configured): each judge's
    accuracy and position flips on the items every judge scored, the RMs' accuracy on the same
    items, and each RM compared with each judge there. ``rm_hits[rm][i]`` is the RM's hit on
    ``pairs[i]``."""
    scores = score_judges(ctx, evaluator, pairs)
    return summarize(scores, rm_hits, bootstrap=bootstrap, seed=seed, ids=ids) if scores else None


def summarize(scores: Mapping[str, JudgeScores], rm_hits: Mapping[str, Sequence[float]], *,
              bootstrap: int = RESAMPLES, seed: int = 0, ids: Sequence[str] | None = None) -> dict[str, Any]:
    n = len(next(iter(scores.values())).hits)
    common = [i for i in range(n) if all(s.hits[i] is not None for s in scores.values())]
    judges: dict[str, Any] = {}
    hits: dict[str, list[float]] = {}
    for name, s in scores.items():
        h = [float(s.hits[i]) for i in common]  # type: ignore[arg-type]
        counts = Counter(s.verdicts[i] for i in common)
        flips = counts.get("flip", 0)
        judges[name] = {**s.endpoint, "n": len(common), "items": n, "missing": s.missing,
                        "accuracy": accuracy(h, bootstrap, seed), "verdicts": dict(counts), "flips": flips,
                        "flip_rate": round(flips / len(common), 4) if common else None,
                        "flip_ci95": wilson(flips, len(common)), "unread": counts.get("unparsed", 0),
                        "wire_calls": s.wire_calls, "transient": s.transient, "verdict_file": s.file,
                        "hits": [s.hits[i] for i in range(n)]}
        if ids is not None:
            judges[name]["item_hits"] = {ids[i]: s.hits[i] for i in common}
        hits[f"judge {name}"] = h
    rms = {rm: [float(hs[i]) for i in common] for rm, hs in rm_hits.items()}
    paired = [{"a": rm, "b": j, **paired_difference(rh, jh, bootstrap, seed)} for rm, rh in rms.items()
              for j, jh in hits.items()]
    names = list(hits)
    paired += [{"a": a, "b": b, **paired_difference(hits[a], hits[b], bootstrap, seed)}
               for k, a in enumerate(names) for b in names[k + 1:]]
    return {"n": len(common), "items": n, "judges": judges,
            "reward_models": {rm: accuracy(h, bootstrap, seed) for rm, h in rms.items()}, "paired": paired}


def markdown(block: dict[str, Any] | None, what: str = "items") -> list[str]:
    """The judges' rows beside the RMs' and the paired sentences, for an evaluator's report."""
    if not block:
        return []
    lines = ["", "### LLM judges beside the reward models", "",
             f"Every judge compared each item's two conversations in both orders. It scores 1 when it prefers the "
             f"chosen side in both, 0 when it prefers the rejected side in both, and 0.5 otherwise (like an RM's "
             f"tie): a position flip (the same position preferred in both orders), a tie, or no readable verdict. "
             f"Accuracy on the {block['n']} {what} every judge scored, the RMs on the same {what}; 95% intervals.", "",
             "| scorer | accuracy | 95% CI | position flips | flip rate [95% CI] | unread |", "|---|---|---|---|---|---|"]
    for rm, a in block["reward_models"].items():
        lines.append(f"| {rm} (RM) | {_num(a['accuracy'])} | {_ci(a['ci95'])} | - | - | - |")
    for name, j in block["judges"].items():
        a = j["accuracy"]
        rate = "-" if j["flip_rate"] is None else f"{j['flip_rate']:.3f} {_ci(j['flip_ci95'])}"
        lines.append(f"| judge {name} ({j['endpoint']}: {j['provider']}:{j['model']}) | {_num(a['accuracy'])} | "
                     f"{_ci(a['ci95'])} | {j['flips']} | {rate} | {j['unread']} |")
    lines += [""] + [f"- {say_paired(p['a'], p['b'], p, what)}" for p in block["paired"]]
    for name, j in block["judges"].items():
        if j["missing"]:
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(j["transient"].items())) or "interrupted"
            lines.append(f"- judge {name}: incomplete, {j['missing']} of {j['items']} {what} unjudged after transient "
                         f"failures ({kinds}); every verdict made is kept: rerun the same command to judge the rest.")
    return lines


def raise_if_incomplete(evaluator: str, results: Mapping[str, Any], report: str) -> None:
    """After the report is written: exit 75 when a judge left items unjudged (a rerun judges them)."""
    block = results.get("judges")
    if not isinstance(block, dict):
        return
    missing = {name: j["missing"] for name, j in block.get("judges", {}).items() if j.get("missing")}
    if missing:
        raise JudgesIncomplete(
            f"eval {evaluator}: judges incomplete ({', '.join(f'{n}: {k} items unjudged' for n, k in missing.items())}) "
            f"after transient failures; the report ({report}) compares them on the items judged so far. Every "
            f"verdict made is kept: rerun the same command to judge the rest.")


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _ci(ci: Any) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
