"""The audit's work: every pair judged in both orders (whole conversation, then each contrasted
turn given each branch's own history), the known pairs judged the same way, one record per pair
appended as soon as it is judged.

Like synthesis, it resumes: a record carries the hash of what made it (judges, templates, the
auditor's endpoint), a rerun skips the pairs whose record has the current hash, and the call
cache answers every call a killed run already made, so a rerun pays nothing twice. Once every
pair is judged the files are rewritten in pair order, so a killed-and-resumed audit ends with
the same files as one that was not killed.

Nothing unread is booked as done: records are held back until the auditor has given one
readable verdict, and an auditor whose first ``audit.unreadable_stop`` verdicts are all
unreadable stops the run (exit 5) with nothing written, as a misconfigured endpoint does.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import progress
from ..config.load import role_endpoint
from ..data import PreferencePair, common_prefix_length, content_hash
from ..errors import ConfigError, MusicError, RecordError
from ..formats import load_pairs
from ..jsonl import AppendOnlyJsonl, iter_json_lines, write_jsonl_atomic
from ..judging import JudgedPair, judge_both_orders
from ..llm.errors import LLMError
from ..paths import SKIPPED_RECORDS
from ..records import ReadTally
from ..synth.rollout import is_transient
from ..tasks import cancel_all, until_first_failure
from .verdicts import classify, contrasted_turns, last_text, p_chosen, preferred

if TYPE_CHECKING:
    from ..context import RunContext

QUOTE_CHARS = 300


class AuditorUnreadable(MusicError):
    """The auditor never returned a verdict that could be read: a wrong model, template or
    endpoint. Stops the run as a misconfigured endpoint does."""

    exit_code = 5


class AuditIncomplete(MusicError):
    """Some pairs are unaudited after transient failures; rerunning the same command judges them."""

    exit_code = 75


def auditor_description(ctx: RunContext) -> dict[str, Any]:
    c = ctx.config
    name = role_endpoint(c, "auditor")
    ep = c.models[name]
    return {"endpoint": name, "provider": ep.provider, "model": ep.model, "mode": ep.mode}


def audit_hash(ctx: RunContext, judge: Any, turn_judge: Any) -> str:
    """Everything that changes a verdict: the judges with their options and templates, and the
    auditor's model and sampling."""
    a = ctx.config.audit
    ep = ctx.config.models[role_endpoint(ctx.config, "auditor")]

    def described(j: Any, opts: dict[str, Any]) -> Any:
        return None if j is None else [j.name, dict(opts), getattr(j, "template_tags", None)]

    return content_hash("audit", described(judge, a.judge_options), described(turn_judge, a.turn_judge_options),
                        {"provider": ep.provider, "model": ep.model, "temperature": ep.temperature, "top_p": ep.top_p,
                         "max_tokens": ep.max_tokens, "options": dict(ep.options)})


def pair_files(ctx: RunContext) -> tuple[list[str], str]:
    """The files to audit, and the format to read them in: ``audit.pairs``, or the synthesis
    output and its shards (as the mix takes them)."""
    a = ctx.config.audit
    if a.pairs:
        return [a.pairs], a.format
    from ..mix import synthetic_files

    files = [str(f) for f in synthetic_files(ctx)]
    if not files:
        raise MusicError(f"no synthetic pairs to audit: {ctx.paths.synth_output} does not exist (run `music synth` "
                         f"first, or name a preference file with --pairs / audit.pairs)")
    return files, "music"


def load_audit_pairs(ctx: RunContext, read: dict[str, ReadTally] | None = None) -> tuple[list[PreferencePair], str, int]:
    """The pairs to audit (a seeded sample when ``audit.limit`` is set), where they came from,
    and how many repeated an id already taken. A bad line stops everything, naming file:line."""
    a = ctx.config.audit
    files, fmt = pair_files(ctx)
    pairs: list[PreferencePair] = []
    with ctx.reading("audit.pairs") as tally:
        for f in files:
            pairs += load_pairs(f, fmt, source=Path(f).stem, allow_empty=True)  # none at all: raised below
    if read is not None:
        read["pairs"] = tally
    where = ", ".join(files)
    if not pairs:
        raise RecordError(where, None, "holds no preference pairs to audit"
                          + ("" if a.pairs else " (synthesis wrote none: see its report)"))
    seen: set[str] = set()
    unique = [p for p in pairs if not (p.id in seen or seen.add(p.id))]  # type: ignore[func-returns-value]
    if a.limit is not None and a.limit < len(unique):
        keep = set(random.Random(a.seed).sample(range(len(unique)), a.limit))
        unique = [p for i, p in enumerate(unique) if i in keep]
    return unique, where, len(pairs) - len(seen)


def load_known_pairs(ctx: RunContext, read: dict[str, ReadTally] | None = None) -> tuple[list[PreferencePair], str | None, str | None]:
    """Known-answer pairs for calibration (chosen known better), where they came from, and why
    there are none when calibration is skipped."""
    c = ctx.config
    a = c.audit
    if a.calibration_pairs == 0:
        return [], None, "audit.calibration_pairs is 0"
    if a.known_pairs:
        with ctx.reading("audit.known_pairs") as tally:
            known, where = load_pairs(a.known_pairs, "auto", source="known"), a.known_pairs
    elif a.pairs:
        return [], None, ("the pairs come from audit.pairs and no known-answer file was given "
                          "(--known FILE / audit.known_pairs)")
    else:
        source = ctx.component("seed_source", c.mix.original.source).require("pairs", "mix.original.source")
        with ctx.reading("mix.original") as tally:
            known = source.load_pairs(c.mix.original)
        where = f"the mix's original data ({c.mix.original.source}{' ' + c.mix.original.path if c.mix.original.path else ''})"
    if read is not None:
        read["known"] = tally
    if not known:
        return [], where, f"{where} holds no pairs"
    known = sorted({p.id: p for p in known}.values(), key=lambda p: p.id)
    if a.calibration_pairs < len(known):
        known = random.Random(a.seed).sample(known, a.calibration_pairs)
    return known, where, None


class Readability:
    """Watches verdicts until the auditor has given one that could be read."""

    def __init__(self, stop_after: int, auditor: dict[str, Any]):
        self.stop_after, self.auditor = stop_after, auditor
        self.readable, self.unread, self.last_raw = False, 0, ""

    def see(self, judged: JudgedPair) -> None:
        if not judged.judged:
            return
        for v in (judged.first, judged.second):
            if v.method != "unparsed":
                self.readable = True
            else:
                self.unread, self.last_raw = self.unread + 1, v.raw
        if not self.readable and self.unread >= self.stop_after:
            raise self.error()

    def error(self) -> AuditorUnreadable:
        a = self.auditor
        return AuditorUnreadable(
            f"auditor endpoint {a['endpoint']!r} (role auditor, provider {a['provider']}, model {a['model']}) gave no "
            f"readable verdict in its first {self.unread} answers (the last began {self.last_raw[:120]!r}). Fix "
            f"roles.auditor / models.{a['endpoint']} or the judge's template (audit.judge_options); nothing was recorded")


def judgement(judged: JudgedPair) -> dict[str, Any]:
    first, second = preferred(judged)
    return {"verdict": classify(judged), "p_chosen": p_chosen(judged), "first_prefers": first,
            "second_prefers": second, "judgement": judged.to_dict()}


async def audit_pair(pair: PreferencePair, judge: Any, turn_judge: Any, llm: Any, watch: Readability,
                     with_turns: bool) -> dict[str, Any]:
    """One pair's record: the whole-conversation verdict and, at each contrasted turn, the
    per-turn verdict (chosen always passed first: the judging core shows it in both orders)."""
    prefix = common_prefix_length(pair.chosen, pair.rejected)
    turns = contrasted_turns(pair) if (with_turns and turn_judge is not None) else []
    results = await asyncio.gather(
        judge_both_orders(judge, pair.chosen, pair.rejected, llm, prefix),
        *(judge_both_orders(turn_judge, t["chosen"], t["rejected"], llm, prefix) for t in turns))
    for r in results:
        watch.see(r)
    meta = pair.meta if isinstance(pair.meta, dict) else {}
    record: dict[str, Any] = {
        "id": pair.id, "source": pair.source, "strategy": meta.get("strategy"),
        "fallback": meta.get("made_by_fallback"), "seed_source": meta.get("seed_source") or pair.source,
        "num_turns": meta.get("num_turns") or sum(m["role"] == "assistant" for m in pair.chosen[prefix:]) or 1,
        **judgement(results[0]), "turns": []}
    for t, r in zip(turns, results[1:]):
        record["turns"].append({"turn": t["turn"], "strategy": t["strategy"], "fallback": t["fallback"],
                                "original": (t["original"] or "")[:QUOTE_CHARS] or None,
                                "modified": (t["modified"] or "")[:QUOTE_CHARS] or None,
                                "chosen_answer": last_text(t["chosen"])[:QUOTE_CHARS],
                                "rejected_answer": last_text(t["rejected"])[:QUOTE_CHARS], **judgement(r)})
    return record


async def audit(ctx: RunContext) -> dict[str, Any]:
    c = ctx.config
    a = c.audit
    tallies: dict[str, ReadTally] = {}
    pairs, where, duplicates = load_audit_pairs(ctx, tallies)  # bad files fail here, before any call
    known, known_where, skipped = load_known_pairs(ctx, tallies)
    read = {k: t.summary() for k, t in tallies.items()}
    skipped_file = ReadTally("audit", side=[r for t in tallies.values() for r in t.side]) \
        .write_side_file(ctx.paths.audit_dir / SKIPPED_RECORDS)
    judge = ctx.component("judge", a.judge, a.judge_options)
    turn_judge = ctx.component("judge", a.turn_judge, a.turn_judge_options) if a.turn_judge else None
    auditor = auditor_description(ctx)
    ctx.llm.preflight(["auditor"])  # a missing key stops the run before any call
    h = audit_hash(ctx, judge, turn_judge)
    current = lambda row: row.get("audit_hash") == h  # noqa: E731 (records of another auditor are not done)
    out, cal = AppendOnlyJsonl(ctx.paths.audit_file("audit"), counts=current), \
        AppendOnlyJsonl(ctx.paths.audit_file("calibration"), counts=current)
    jobs = [("pair", p) for p in pairs if p.id not in out.done_ids] + \
           [("known", p) for p in known if p.id not in cal.done_ids]
    watch = Readability(a.unreadable_stop, auditor)
    llm = ctx.role("auditor")
    in_flight = len(jobs) if c.models[auditor["endpoint"]].mode == "batch" else a.concurrency  # batch: one wavefront
    sem = asyncio.Semaphore(max(1, in_flight))
    held: list[tuple[AppendOnlyJsonl, dict[str, Any]]] = []  # records waiting for the first readable verdict
    transient: Counter[str] = Counter()
    task = progress.Task("audit", total=len(pairs) + len(known), unit="pairs", detail=ctx.llm.totals,
                         completed=len(pairs) + len(known) - len(jobs))

    def keep(file: AppendOnlyJsonl, record: dict[str, Any]) -> None:
        held.append((file, {**record, "audit_hash": h, "auditor": auditor}))
        if watch.readable:
            for f, r in held:
                f.append(r)
            held.clear()

    async def one(kind: str, pair: PreferencePair) -> None:
        async with sem:
            try:
                record = await audit_pair(pair, judge, turn_judge, llm, watch, with_turns=kind == "pair")
            except LLMError as exc:
                if not is_transient(exc):
                    raise
                transient[exc.kind] += 1  # nothing recorded: the next run judges this pair
                return
        keep(out if kind == "pair" else cal, record)
        task.advance(1)

    tasks = [asyncio.ensure_future(one(k, p)) for k, p in jobs]
    try:
        await until_first_failure(tasks)
        if held and not watch.readable:
            raise watch.error()
    finally:
        await cancel_all(tasks)
        out.close()
        cal.close()
        task.close()
    records = settle(ctx.paths.audit_file("audit"), [p.id for p in pairs], h)
    known_records = settle(ctx.paths.audit_file("calibration"), [p.id for p in known], h)
    missing = len(pairs) - len(records) + len(known) - len(known_records)
    return {"pairs": pairs, "where": where, "files": pair_files(ctx)[0], "duplicates": duplicates, "records": records,
            "read": read, "skipped_file": str(skipped_file) if skipped_file else None,
            "known_records": known_records, "known_where": known_where, "calibration_skipped": skipped,
            "auditor": auditor, "audit_hash": h, "missing": missing, "transient": dict(transient),
            "templates": {"judge": getattr(judge, "template_tags", None),
                          "turn_judge": getattr(turn_judge, "template_tags", None) if turn_judge else None},
            "usage": ctx.llm.usage_report().get("auditor", {})}


def settle(path: Path, order: list[str], h: str) -> list[dict[str, Any]]:
    """The current records in pair order (the last one of an id wins). Once every pair has one,
    the file is rewritten to hold exactly them: records of another auditor or of pairs no longer
    audited are dropped, and a resumed audit's file equals an uninterrupted one's."""
    latest: dict[str, dict[str, Any]] = {}
    if path.exists():
        for _, row in iter_json_lines(path):
            if isinstance(row, dict) and row.get("audit_hash") == h:
                latest[str(row["id"])] = row
    records = [latest[i] for i in order if i in latest]
    if len(records) == len(order):
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        wanted = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records)
        if current != wanted:
            write_jsonl_atomic(path, records)
    return records


def run_audit(ctx: RunContext) -> dict[str, Any]:
    """The whole audit stage: judge, write the report, release the endpoints. Raises
    :class:`AuditIncomplete` (exit 75) when pairs are unaudited after transient failures, and
    :class:`AuditorUnreadable` or the endpoint's fatal error (exit 5) when the auditor cannot serve."""
    from .report import write_report

    if ctx.config.roles.auditor is None and ctx.config.roles.judge is None:
        raise ConfigError("config key 'roles.auditor': no auditor endpoint (and no judge to default to)")

    async def go() -> dict[str, Any]:
        try:
            return await audit(ctx)
        finally:
            await ctx.aclose()

    result = asyncio.run(go())
    report = write_report(ctx, result)
    if result["missing"]:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(result["transient"].items())) or "interrupted"
        raise AuditIncomplete(
            f"audit incomplete: {result['missing']} pairs are unaudited after transient failures ({kinds}); the report "
            f"covers the {len(result['records'])} audited so far ({ctx.paths.audit_file('report-md')}). Every verdict "
            f"made is kept: rerun the same command to judge the rest.")
    return {"pairs": report["pairs"], "validity": report["validity"]["rate"], "ci95": report["validity"]["ci95"],
            "report": str(ctx.paths.audit_file("report-md")), "audit": str(ctx.paths.audit_file("audit")),
            "wire_calls": report["wire_calls_this_run"]}
