"""The RMB section of the report: accuracy per set, goal and user turns, the categories, the
paired comparisons, what each RM could not see; and the one-line headline per set."""

from __future__ import annotations

from typing import Any

from music_core import contamination, judge_scoring
from music_core.scoring import truncation_lines
from music_core.stats import say_paired

from .schema import SET_NAMES, TURN_BUCKETS


def headline(evaluator: str, r: dict[str, Any]) -> list[str]:
    """Per set, 'music vs baseline: +x.x points [lo, hi] on N RMB pairwise items' (or the first
    pair of RMs when the run's two are not both there)."""
    out = []
    for s, rows in r["paired"].items():
        if not rows:
            continue
        p = next((p for p in rows if {p["a"], p["b"]} == {"music", "baseline"}), rows[0])
        if (p["a"], p["b"]) == ("baseline", "music"):  # say it the way round the question is asked
            lo, hi = p["ci95"] or (0.0, 0.0)
            p = {**p, "a": "music", "b": "baseline", "difference": 0.0 - (p["difference"] or 0.0),
                 "ci95": (0.0 - hi, 0.0 - lo), "a_only": p["b_only"], "b_only": p["a_only"]}
        out.append(f"{evaluator}: {say_paired(p['a'], p['b'], p, f'RMB {SET_NAMES[s]} items')}")
    return out


def markdown(r: dict[str, Any]) -> str:
    items = " and ".join(f"{n} {SET_NAMES[s]} items" for s, n in r["items"].items())
    left = ", ".join(f"{k} {v}" for k, v in r["left_out"].items()) or "none"
    lines = ["## RMB: pairwise and Best-of-N accuracy", "",
             f"`{r['data']}` ({r['licence']}): {items} scored from {r['files']} files; left out: {left}; "
             f"{contamination.describe(r['contamination'])}. As RMB scores it: a pairwise win is strictly "
             f"r(chosen) > r(reject) (a tie is a loss); a Best-of-N item counts when r(bon_best) beats every loser "
             f"strictly. 95% bootstrap intervals.", ""]
    models = r["models"]
    sets = [(name, s, m["sets"][s]) for name, m in models.items() for s in r["sets"]]
    goals = sorted({g for _, _, f in sets for g in f["by_goal"]})
    turns = [b for b in TURN_BUCKETS if any(b in f["by_turns"] for _, _, f in sets)]
    lines += ["| reward model | set | accuracy | 95% CI | " + " | ".join(goals + [f"{b} turn{'' if b == '1' else 's'}" for b in turns]) + " |",
              "|---|---|---|---|" + "---|" * (len(goals) + len(turns))]
    for name, s, f in sets:
        acc = f["accuracy"]
        cells = [_acc(f["by_goal"].get(g)) for g in goals] + [_acc(f["by_turns"].get(b)) for b in turns]
        lines.append(f"| {name} | {SET_NAMES[s]} | {_num(acc['accuracy'])} | {_ci(acc['ci95'])} | " + " | ".join(cells) + " |")
    names = list(models)
    if names:
        lines += ["", "By category (the top two levels of `category_path`), accuracy [95% CI]:", "",
                  "| set | category | n | " + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]
        for s in r["sets"]:
            for cat in sorted({c for m in models.values() for c in m["sets"][s]["by_category"]}):
                accs: list[dict[str, Any] | None] = [models[n]["sets"][s]["by_category"].get(cat) for n in names]
                n_items = next((a["n"] for a in accs if a), 0)
                lines.append(f"| {SET_NAMES[s]} | {cat} | {n_items} | "
                             + " | ".join(f"{_num(a['accuracy'])} {_ci(a['ci95'])}" if a else "-" for a in accs) + " |")
    if any(r["paired"].values()):
        lines += ["", "Paired differences (same items; accuracy of the first minus the second):", ""]
        lines += [f"- {SET_NAMES[s]}: {say_paired(p['a'], p['b'], p)}" for s, rows in r["paired"].items() for p in rows]
    lines += judge_scoring.markdown(r.get("judges"), "pairwise items")
    lines += truncation_lines(r.get("truncation", {}))
    return "\n".join(lines) + "\n"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _ci(ci: Any) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""


def _acc(a: dict[str, Any] | None) -> str:
    return f"{a['accuracy']:.2f} (n={a['n']})" if a and a["n"] else "-"
