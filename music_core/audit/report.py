"""The audit's report: validity with its interval, every way a verdict can fail to be valid,
validity by strategy, turn, fallback, seed source and length, the least valid pairs quoted, and
the calibration that says how far to trust any of it, in words."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..jsonl import write_text_atomic
from ..records import describe_read
from .human import human_section
from .human import markdown as human_markdown
from .stats import breakdown, rate, summary, tells_apart, turn_bucket

if TYPE_CHECKING:
    from ..context import RunContext

RANK = {"invalid": 0, "flip": 1, "tie": 2, "unparsed": 3, "valid": 4}


def calibration(result: dict[str, Any]) -> dict[str, Any]:
    known = result["known_records"]
    if not known:
        reason = result["calibration_skipped"] or "no known pair was audited"
        return {"skipped": reason, "known_pairs": 0}
    verdicts = [r["verdict"] for r in known]
    n = len(known)
    correct, wrong = verdicts.count("valid"), verdicts.count("invalid")
    return {"source": result["known_where"], "known_pairs": n, "accuracy": rate(correct, n),
            "wrong_in_both_orders": rate(wrong, n), "counts": summary(verdicts)["counts"],
            # the same pairs with sides swapped: chosen shown second instead of first
            "chosen_shown_first": rate(sum(r["first_prefers"] == "chosen" for r in known), n),
            "chosen_shown_second": rate(sum(r["second_prefers"] == "chosen" for r in known), n),
            **tells_apart(correct, wrong)}


def trust(validity: dict[str, Any], cal: dict[str, Any]) -> str:
    """How far the validity rate can be trusted, in words."""
    if "skipped" in cal:
        return (f"**Not calibrated** ({cal['skipped']}): the validity rate is this auditor's opinion, of unknown "
                f"accuracy. Give it known-answer pairs (audit.known_pairs) to know how far to trust it.")
    acc = cal["accuracy"]
    counts = cal["counts"]
    p = f"sign test p = {cal['p_value']:.3g}" if cal["p_value"] is not None else "no known pair decided"
    if not cal["tells_apart"]:
        return (f"**The auditor cannot tell known pairs apart**: on {cal['known_pairs']} pairs whose better side is "
                f"known it picked that side in both orders {counts['valid']} times and the worse side "
                f"{counts['invalid']} times ({counts['flip']} position flips; {p}). The validity rate above says "
                f"nothing about the pairs: use a stronger auditor (roles.auditor).")
    lines = (f"The auditor tells known pairs apart: it picked the known better side in both orders for "
             f"{counts['valid']} of {cal['known_pairs']} ({_pct(acc)}) and the worse side for {counts['invalid']} "
             f"({p}).")
    if acc["rate"] and validity["rate"] is not None:
        lines += (f" It confirms synthetic pairs at {validity['rate'] / acc['rate']:.2f}x the rate it confirms "
                  f"known-good ones.")
    return lines


def warnings(result: dict[str, Any], validity: dict[str, Any]) -> list[str]:
    out = []
    a = result["auditor"]
    me = f"{a['provider']}:{a['model']}"
    makers = {str((r_meta or {}).get("assistant_simulator")) for r_meta in result.get("pair_endpoints", [])}
    if a.get("same_as_assistant_simulator") or me in makers:
        out.append(f"the auditor ({me}) is the model that wrote the answers (the assistant simulator): a model judging "
                   f"its own answers tends to prefer them, so set roles.auditor to another model for an independent audit")
    n = validity["n"]
    c = validity["counts"]
    if n and c["flip"] > n / 2:
        out.append(f"{c['flip']} of {n} pairs got the same position in both orders: the verdicts are mostly position bias")
    if n and c["unparsed"] > n / 10:
        out.append(f"{c['unparsed']} of {n} pairs have a verdict that could not be read")
    return out


def least_valid(records: list[dict[str, Any]], k: int = 5) -> list[dict[str, Any]]:
    def key(r: dict[str, Any]) -> tuple[int, float, str]:
        return RANK[r["verdict"]], 0.5 if r["p_chosen"] is None else r["p_chosen"], r["id"]

    out = []
    for r in sorted(records, key=key)[:k]:
        turns = sorted(r["turns"], key=lambda t: (RANK[t["verdict"]], 0.5 if t["p_chosen"] is None else t["p_chosen"]))
        reasons = [v["reasons"] for v in r["judgement"]["verdicts"]]
        out.append({"id": r["id"], "verdict": r["verdict"], "p_chosen": r["p_chosen"], "strategy": r["strategy"],
                    "auditor_reasons": reasons, "worst_turn": turns[0] if turns else None})
    return out


def build(ctx: RunContext, result: dict[str, Any]) -> dict[str, Any]:
    records = result["records"]
    a = result["auditor"]
    from ..config.load import role_endpoint

    a["same_as_assistant_simulator"] = a["endpoint"] == role_endpoint(ctx.config, "assistant_simulator") \
        and not ctx.config.audit.pairs
    result["pair_endpoints"] = [p.meta.get("endpoints") for p in result["pairs"] if isinstance(p.meta, dict)]
    turns = [dict(t, pair_fallback=r["fallback"]) for r in records for t in r["turns"]]
    validity = summary([r["verdict"] for r in records])
    cal = calibration(result)
    probs = [r["p_chosen"] for r in records if r["p_chosen"] is not None]
    return {
        "pairs_file": result["where"], "pairs": len(result["pairs"]), "audited": len(records),
        "unaudited": len(result["pairs"]) - len(records), "duplicate_ids_skipped": result["duplicates"],
        "records": result.get("read", {}), "skipped_records_file": result.get("skipped_file"),
        "auditor": a, "templates": result["templates"], "audit_hash": result["audit_hash"],
        "validity": validity,
        "mean_p_chosen": round(sum(probs) / len(probs), 4) if probs else None,
        "turns": {"judged": len(turns), **summary([t["verdict"] for t in turns])},
        "by_turn": breakdown(turns, lambda t: t["turn"], lambda t: t["verdict"]),
        "by_strategy": breakdown(records, lambda r: r["strategy"], lambda r: r["verdict"]),
        "turns_by_strategy": breakdown(turns, lambda t: t["strategy"], lambda t: t["verdict"]),
        "by_fallback": breakdown(records, lambda r: r["fallback"], lambda r: r["verdict"]),
        "by_seed_source": breakdown(records, lambda r: r["seed_source"], lambda r: r["verdict"]),
        "by_num_turns": breakdown(records, lambda r: turn_bucket(int(r["num_turns"])), lambda r: r["verdict"]),
        "least_valid": least_valid(records),
        "calibration": cal,
        "trust": trust(validity, cal),
        "warnings": warnings(result, validity),
        "usage": result["usage"],
        "wire_calls_this_run": int(result["usage"].get("wire_calls", 0)),
        "human": human_section(ctx, result),
    }


def _pct(r: dict[str, Any]) -> str:
    if r["rate"] is None:
        return "n/a"
    lo, hi = r["ci95"]
    return f"{r['rate']:.1%} [{lo:.1%}, {hi:.1%}]"


def _table(title: str, rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    out = [f"**{title}**", "", "| value | pairs | valid | 95% CI | invalid | flip | tie | unparsed |",
           "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        c = row["counts"]
        ci = f"[{row['ci95'][0]:.2f}, {row['ci95'][1]:.2f}]" if row["ci95"] else ""
        out.append(f"| {row['value']} | {row['n']} | {row['rate']:.2f} | {ci} | {c['invalid']} | {c['flip']} | "
                   f"{c['tie']} | {c['unparsed']} |")
    return out + [""]


def markdown(r: dict[str, Any]) -> str:
    v, t, a, cal = r["validity"], r["turns"], r["auditor"], r["calibration"]
    c = v["counts"]
    lines = ["## Pair audit", "",
             f"Auditor `{a['endpoint']}` ({a['provider']}:{a['model']}), judges "
             f"{', '.join(x for x in (r['templates']['judge'] or []) + (r['templates']['turn_judge'] or []))}; "
             f"{r['audited']} of {r['pairs']} pairs from `{r['pairs_file']}`, each in both orders.", "",
             *[f"- {what} records: {describe_read(read)}" for what, read in r.get("records", {}).items()],
             f"- **validity** (auditor prefers chosen in both orders): {c['valid']} of {v['n']}, {_pct(v)}",
             f"- not valid: {c['invalid']} prefer rejected in both orders, {c['flip']} position flips "
             f"(flip rate {v['flip_rate'] or 0:.1%}), {c['tie']} ties, {c['unparsed']} unparsed (none counted as valid)",
             f"- per contrasted turn: {t['counts']['valid']} of {t['judged']} turns valid, {_pct(t)}"]
    if r["mean_p_chosen"] is not None:
        lines.append(f"- mean position-debiased P(chosen better): {r['mean_p_chosen']:.3f}")
    if "skipped" in cal:
        lines.append(f"- calibration: skipped ({cal['skipped']})")
    else:
        lines += [f"- calibration on {cal['known_pairs']} known pairs from {cal['source']}: accuracy {_pct(cal['accuracy'])}; "
                  f"chosen shown first {_pct(cal['chosen_shown_first'])}, sides swapped (chosen shown second) "
                  f"{_pct(cal['chosen_shown_second'])}"]
    lines += ["", r["trust"], ""]
    lines += [f"- warning: {w}" for w in r["warnings"]] + ([""] if r["warnings"] else [])
    lines += _table("By contrasted turn (per-turn verdicts)", r["by_turn"])
    lines += _table("By strategy (whole pairs)", r["by_strategy"])
    lines += _table("By strategy that made the turn (per-turn verdicts)", r["turns_by_strategy"])
    lines += _table("By fallback (share of turns the fallback strategy made)", r["by_fallback"])
    lines += _table("By seed source", r["by_seed_source"])
    lines += _table("By number of turns", r["by_num_turns"])
    if r["least_valid"]:
        lines += ["**The least valid pairs**", ""]
        for q in r["least_valid"]:
            p = "n/a" if q["p_chosen"] is None else f"{q['p_chosen']:.3f}"
            lines.append(f"- `{q['id']}`: {q['verdict']}, P(chosen better) {p}; auditor: "
                         f"{_quote(q['auditor_reasons'][0] if q['auditor_reasons'] else '')}")
            w = q["worst_turn"]
            if w:
                lines.append(f"  - turn {w['turn']} ({w['verdict']}, strategy {w['strategy']}): user asked "
                             f"{_quote(w['original'])}" + (f", the rejected branch was asked {_quote(w['modified'])}"
                                                          if w['modified'] else ""))
                lines.append(f"  - chosen: {_quote(w['chosen_answer'])}")
                lines.append(f"  - rejected: {_quote(w['rejected_answer'])}")
        lines.append("")
    if r.get("human"):
        lines += human_markdown(r["human"])
    lines.append(f"Wire calls this run: {r['wire_calls_this_run']} (a rerun pays nothing twice: every answered call is cached).")
    return "\n".join(lines) + "\n"


def _quote(text: Any, limit: int = 160) -> str:
    s = " ".join(str(text or "").split())
    return f"\"{s[:limit]}{'...' if len(s) > limit else ''}\""


def write_report(ctx: RunContext, result: dict[str, Any]) -> dict[str, Any]:
    report = build(ctx, result)
    write_text_atomic(ctx.paths.audit_file("report"), json.dumps(report, indent=2, default=str) + "\n")
    write_text_atomic(ctx.paths.audit_file("report-md"), markdown(report))
    return report

