"""The synthesis report: what the pairs look like and what they cost, as JSON and Markdown."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from statistics import mean
from typing import Any

from ..jsonl import iter_json_lines, write_text_atomic
from ..paths import side_file, side_paths
from ..records import describe_read


def _error_kind(error: str) -> str:
    """``turn 2: ContrastError: ...`` -> ``ContrastError``."""
    m = re.match(r"turn \d+: (\w+):", error)
    return m.group(1) if m else error[:60]


def _read(path: Path) -> list[dict[str, Any]]:
    return [obj for _, obj in iter_json_lines(path)] if path.exists() else []


def build(out: Path, usage: dict[str, Any] | None = None, run: dict[str, Any] | None = None) -> dict[str, Any]:
    run = run or {}
    pairs = _read(out)
    paths = side_paths(out)
    errors = [e for e in _read(paths["errors"]) if e.get("final") is True]
    filtered = _read(paths["filtered"])
    turns_hist = Counter(p["meta"].get("num_turns", 0) for p in pairs)
    per_turn: dict[int, dict[str, list[int]]] = {}
    for p in pairs:
        c_ans = [m["content"] for m in p["chosen"][p["meta"].get("prefix_messages", 0):] if m["role"] == "assistant"]
        r_ans = [m["content"] for m in p["rejected"][p["meta"].get("prefix_messages", 0):] if m["role"] == "assistant"]
        for t, (c, r) in enumerate(zip(c_ans, r_ans), start=1):
            d = per_turn.setdefault(t, {"chosen": [], "rejected": []})
            d["chosen"].append(len(c))
            d["rejected"].append(len(r))
    attempts = [a for p in pairs for a in p["meta"].get("user_turn_attempts", [])]
    attempts += [a for e in errors for a in e.get("user_turn_attempts", [])]
    sim_failures = sum(1 for p in pairs if str(p["meta"].get("stop_reason", "")).startswith("user_simulator_failed"))
    draws = sum(attempts) + sum(p["meta"].get("user_turn_failed_attempts", 0) for p in pairs)
    contrasted = [t for p in pairs for t in p["meta"].get("turns", []) if t.get("contrasted")]
    fallback_turns = sum(1 for t in contrasted if t.get("fallback_reason") is not None)
    rejections = Counter(r for p in pairs for r in p["meta"].get("user_turn_rejections", []))
    rejections.update(r for e in errors for r in e.get("user_turn_rejections", []))
    drawn = len(attempts) + sum(rejections.values())
    strategy_attempts = [t.get("strategy_attempts", 1) for t in contrasted if t.get("fallback_reason") is None]
    total = len(pairs) + len(errors) + len(filtered)
    config = json.loads(paths["config"].read_text()) if paths["config"].exists() else {}
    report = {
        "output": str(out),
        "prompt_profile": (config.get("synth") or {}).get("prompt_profile"),
        "seeds": run.get("seeds"), "seeds_read": run.get("seeds_read") or {}, "missing": run.get("missing", 0), "transient_failures": run.get("transient", {}),
        "fallback_turn_share": round(fallback_turns / max(1, len(contrasted)), 4),
        "pairs_made_by_fallback": dict(Counter(p["meta"].get("made_by_fallback", "none") for p in pairs)),
        "pairs": len(pairs), "errors": len(errors), "filtered": len(filtered),
        "filter_rejection_rate": round(len(filtered) / max(1, len(pairs) + len(filtered)), 4),
        "error_rate": round(len(errors) / max(1, total), 4),
        "error_kinds": dict(Counter(_error_kind(e.get("error", "")) for e in errors).most_common(10)),
        "turns_per_pair": {str(k): v for k, v in sorted(turns_hist.items())},
        "mean_turns": round(mean([p["meta"].get("num_turns", 0) for p in pairs]), 3) if pairs else 0,
        "stop_reasons": dict(Counter(p["meta"].get("stop_reason", "") for p in pairs)),
        "answer_chars_by_turn": {str(t): {"chosen_mean": round(mean(d["chosen"]), 1), "rejected_mean": round(mean(d["rejected"]), 1),
                                          "n": len(d["chosen"])} for t, d in sorted(per_turn.items())},
        "user_simulator": {
            "turns_accepted": len(attempts),
            "accepted_first_try": round(sum(1 for a in attempts if a == 1) / max(1, len(attempts)), 4),
            "usable_share_of_samples": round(len(attempts) / max(1, draws), 4),
            "conversations_cut_short": sim_failures,
            "samples_drawn": drawn,
            "rejection_rate": round(sum(rejections.values()) / max(1, drawn), 4),
            "rejections_by_reason": dict(rejections.most_common()),
        },
        "contrast": {
            "turns": len(contrasted),
            "fallbacks": fallback_turns,
            "by_strategy": dict(Counter(t.get("strategy") or "?" for t in contrasted)),
            "noop_turns": sum(1 for t in contrasted if t.get("noop")),
            # the main strategy's turns that its first try made (instruction-contrast: the first rewrite)
            "first_try": round(sum(1 for a in strategy_attempts if a == 1) / max(1, len(strategy_attempts)), 4)
            if strategy_attempts else None,
        },
        "tokens_in_pairs": {k: sum(p["meta"].get("usage", {}).get(k, 0) for p in pairs)
                            for k in ("samples", "prompt_tokens", "completion_tokens")},
        # samples behind the pairs that max_tokens cut short, by role (finish_reason "length")
        "cut_at_max_tokens": dict(sum((Counter(p["meta"].get("usage", {}).get("cut_at_max_tokens", {})) for p in pairs),
                                      Counter())),
        "usage_this_run": usage or {},
        "cost_usd_this_run": round(sum(u.get("cost_usd", 0.0) for u in (usage or {}).values()), 6),
        # batch jobs and replica load per endpoint, this run
        "endpoints_this_run": (run or {}).get("endpoints", {}),
    }
    return report


def to_markdown(r: dict[str, Any]) -> str:
    c = r["contrast"]
    lines = ["# Synthesis report", "", f"Output: `{r['output']}`", "",
             f"- prompt profile: **{r['prompt_profile']}** (docs/prompt-profiles.md lists how it differs from the paper)",
             *([f"- seed records: {describe_read(r['seeds_read'])}"] if r.get("seeds_read") else []),
             f"- pairs: **{r['pairs']}**, final errors: {r['errors']} ({r['error_rate']:.1%}), filtered: {r['filtered']} "
             f"(rejection rate {r['filter_rejection_rate']:.1%})"
             + (f", **missing after transient failures: {r['missing']}** (rerun to make them)" if r["missing"] else ""),
             f"- **contrast turns made by the fallback strategy: {c['fallbacks']} of {c['turns']} "
             f"({r['fallback_turn_share']:.1%})**; pairs made by a fallback: {r['pairs_made_by_fallback']}",
             f"- turns per pair: {r['turns_per_pair']} (mean {r['mean_turns']}); stop reasons: {r['stop_reasons']}",
             f"- user simulator: {r['user_simulator']['turns_accepted']} turns accepted, "
             f"{r['user_simulator']['accepted_first_try']:.1%} on the first try, "
             f"{r['user_simulator']['usable_share_of_samples']:.1%} of samples usable, "
             f"{r['user_simulator']['conversations_cut_short']} conversations cut short; "
             f"{r['user_simulator']['rejection_rate']:.1%} of samples rejected: {r['user_simulator']['rejections_by_reason']}",
             f"- contrast: {r['contrast']['turns']} turns by strategy {r['contrast']['by_strategy']}, "
             f"{r['contrast']['noop_turns']} with nothing to contrast"
             + (f", made on the strategy's first try {r['contrast']['first_try']:.1%}" if r['contrast']['first_try'] is not None else ""),
             ]
    if r["error_kinds"]:
        lines.append(f"- error kinds: {r['error_kinds']}")
    if r["cut_at_max_tokens"]:
        lines.append(f"- **samples cut short by max_tokens** (finish_reason length), by role: {r['cut_at_max_tokens']} of "
                     f"{r['tokens_in_pairs']['samples']}; a simulator may trim a cut sample (the small-model profile keeps a "
                     "user turn's first sentences), but an answer left unfinished in a pair can bias the reward model: "
                     "raise max_tokens of that role's endpoint (models.<name>.max_tokens)")
    lines += ["", "## Answer length by turn (characters)", "", "| turn | chosen | rejected | n |", "|---|---|---|---|"]
    lines += [f"| {t} | {d['chosen_mean']} | {d['rejected_mean']} | {d['n']} |" for t, d in r["answer_chars_by_turn"].items()]
    lines += ["", "## Usage this run", "", "| role | requests | wire calls | cached samples | retries | errors | prompt tok | completion tok | cost USD |",
              "|---|---|---|---|---|---|---|---|---|"]
    for role, u in r["usage_this_run"].items():
        lines.append(f"| {role} | {u['requests']} | {u['wire_calls']} | {u['cached_samples']} | {u['retries']} | "
                     f"{sum(u['errors'].values())} | {u['prompt_tokens']} | {u['completion_tokens']} | {u['cost_usd']:.4f} |")
    for name, e in r.get("endpoints_this_run", {}).items():
        b = e.get("batch")
        if b:
            lines.append(f"\nEndpoint `{name}` ran in batch mode (costs above at the batch price): {b['rounds']} rounds, "
                         f"{b['jobs_submitted']} jobs submitted ({b['items_submitted']} requests), "
                         f"{b['jobs_reattached']} jobs of an earlier run re-attached, {b['items_from_journal']} answers "
                         f"taken from jobs an earlier run had collected, {b['items_resubmitted']} requests sent again "
                         f"(failed, expired or cancelled); job outcomes {b['job_states']}.")
        if e.get("replicas"):
            served = ", ".join(f"{x['url']}: {x['served']} served, {x['failures']} failed" for x in e["replicas"])
            lines.append(f"\nEndpoint `{name}` replicas: {served}.")
    t = r["tokens_in_pairs"]
    lines += ["", f"Tokens behind all pairs in the file: {t['prompt_tokens']} prompt + {t['completion_tokens']} completion "
              f"({t['samples']} samples; what this run paid is in the table above).", ""]
    return "\n".join(lines)


def write(out: Path, usage: dict[str, Any] | None = None, run: dict[str, Any] | None = None) -> tuple[Path, dict[str, Any]]:
    """Write the report beside ``out`` (JSON and Markdown); return the Markdown's path and the report."""
    r = build(out, usage, run)
    md_path = side_file(out, "report-md")
    write_text_atomic(side_file(out, "report"), json.dumps(r, indent=2) + "\n")
    write_text_atomic(md_path, to_markdown(r))
    return md_path, r
