"""The depth evaluator's Markdown section and its one-line headline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from music_core import contamination, judge_scoring
from music_core.scoring import truncation_lines
from music_core.stats import say_paired

MEANING = ("Each pair differs in one assistant answer, `d` answers from the end (`d = 0` the last answer); every "
           "later message is the same on both sides, so the defect can be seen only from what follows it. Chance is "
           "0.5, and a tie is half right, so an RM that cannot see the defect sits at exactly 0.5: an RM that reads "
           "only the last turn is right at `d = 0` and falls to about chance at `d >= 1`. A curve that stays above "
           "0.5 at `d >= 1` means the RM reads the earlier turns. Deeper pairs come only from longer conversations, "
           "so read the curve beside the accuracy by number of turns.")


def headline(evaluator: str, r: dict[str, Any]) -> list[str]:
    """'depth: music vs baseline at d>=1: +x.x points [lo, hi] ...' (the first two RMs when the
    run's two are not both there; one RM: its accuracy at d >= 1)."""
    rows = r["paired"].get("d>=1") or []
    if not rows:
        out = []
        for name, m in r["models"].items():
            a = m["d>=1"] if m["d>=1"]["n"] else m["all"]
            where = "d>=1" if m["d>=1"]["n"] else "all depths"
            out.append(f"{evaluator}: {name} at {where}: {_acc(a)} (chance 0.5)")
        return out[:1]
    p = next((p for p in rows if {p["a"], p["b"]} == {"music", "baseline"}), rows[0])
    if (p["a"], p["b"]) == ("baseline", "music"):  # said the way round the question is asked
        lo, hi = p["ci95"] or (0.0, 0.0)
        p = {**p, "a": "music", "b": "baseline", "difference": 0.0 - (p["difference"] or 0.0), "ci95": (0.0 - hi, 0.0 - lo),
             "a_only": p["b_only"], "b_only": p["a_only"]}
    accs = ", ".join(f"{n} {_num(r['models'][n]['d>=1']['accuracy'])}" for n in (p["a"], p["b"]))
    return [f"{evaluator}: at d>=1 ({accs}; chance 0.5): {say_paired(p['a'], p['b'], p, 'pairs differing before the last answer')}"]


def markdown(r: dict[str, Any]) -> str:
    depths = [str(d) for d in r["depths"]]
    built = r.get("built")
    how = ""
    if built:
        about = [*_used(built), f"card: `{built['card']}`", f"seed {built['seed']}"]
        how = f"built from `{built['from']}` ({'; '.join(about)})"
    lines = ["## Where can the reward model see a defect? (depth)", "",
             f"`{r['data']}`{' ' + how if how else ''}: {r['pairs']} pairs; defects: {', '.join(r['kinds'])}; "
             f"{contamination.describe(r['contamination'])}. 95% bootstrap intervals.", "", MEANING, "",
             "| reward model | " + " | ".join(f"d = {d}" for d in depths) + " | d >= 1 | ties |",
             "|---|" + "---|" * (len(depths) + 2)]
    for name, m in r["models"].items():
        lines.append(f"| {name} | " + " | ".join(_acc(m["by_depth"].get(d)) for d in depths)
                     + f" | {_acc(m['d>=1'])} | {m['ties']} |")
    for name, j in ((r.get("judges") or {}).get("judges") or {}).items():  # LLM judges (eval.judges)
        m = j["figures"]
        lines.append(f"| judge {name} | " + " | ".join(_acc(m["by_depth"].get(d)) for d in depths)
                     + f" | {_acc(m['d>=1'])} | {m['ties']} |")
    if any(m["not_visible"] for m in r["models"].values()):
        lines += ["", "Pairs whose defect truncation cut away (the whole first exchange dropped, and the defect in it) "
                      "are not visible to that RM; accuracy on the visible pairs only:", "",
                  "| reward model | not visible | " + " | ".join(f"d = {d}" for d in depths) + " | d >= 1 |",
                  "|---|---|" + "---|" * (len(depths) + 1)]
        for name, m in r["models"].items():
            lines.append(f"| {name} | {m['not_visible']} | " + " | ".join(_acc(m["by_depth_visible"].get(d)) for d in depths)
                         + f" | {_acc(m['d>=1_visible'])} |")
    lines += ["", "By defect kind:", "", "| reward model | defect | all depths | " + " | ".join(f"d = {d}" for d in depths) + " |",
              "|---|---|---|" + "---|" * len(depths)]
    for name, m in r["models"].items():
        for kind in r["kinds"]:
            lines.append(f"| {name} | {kind} | {_acc(m['by_kind'].get(kind))} | "
                         + " | ".join(_acc(m["by_depth_kind"].get(f"{d}/{kind}")) for d in depths) + " |")
    buckets = [b for b in ("1", "2", "3-4", "5+") if any(b in m["by_turns"] for m in r["models"].values())]
    lines += ["", "By number of assistant turns in the conversation (all depths):", "",
              "| reward model | " + " | ".join(f"turns: {b}" for b in buckets) + " |", "|---|" + "---|" * len(buckets)]
    for name, m in r["models"].items():
        lines.append(f"| {name} | " + " | ".join(_acc(m["by_turns"].get(b)) for b in buckets) + " |")
    if any(r["paired"].values()):
        lines += ["", "Paired differences at each depth (same pairs; accuracy of the first minus the second; a tie "
                      "counts half; McNemar on the pairs where one RM did strictly better):", ""]
        for d, rows in r["paired"].items():
            label = f"d = {d}" if d.isdigit() else "d >= 1"
            lines += [f"- {label}: {say_paired(p['a'], p['b'], p, 'pairs')}" for p in rows]
    lines += judge_scoring.markdown(r.get("judges"), "pairs")
    lines += truncation_lines(r.get("truncation", {}))
    if r.get("figure"):
        lines += ["", f"![accuracy by depth]({Path(r['figure']).name})"]
    return "\n".join(lines) + "\n"


def _used(built: dict[str, Any]) -> list[str]:
    """What of the source was used: the held-out pairs' chosen sides, and the cap on them."""
    out = ["the chosen sides of the run's held-out pairs"] if built.get("held_out") else []
    s = built.get("sampled") or {}
    if s.get("used", 0) < s.get("conversations", 0):
        out.append(f"a seeded sample of {s['used']} of its {s['conversations']} conversations, eval.depth.limit "
                   f"{s['limit']}, to keep the run cheap")
    elif s.get("limit"):
        out.append(f"all {s['conversations']} conversations, within eval.depth.limit {s['limit']}")
    return out


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _acc(a: dict[str, Any] | None) -> str:
    if not a or not a["n"]:
        return "-"
    ci = a["ci95"]
    return f"{a['accuracy']:.3f} [{ci[0]:.2f}, {ci[1]:.2f}] (n={a['n']})"

