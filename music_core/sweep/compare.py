"""The sweep's comparison: one row per variant with the headline metrics of its MUSIC RM and their
intervals (each evaluator names its own through ``Evaluator.headline``; the audit's validity),
paired differences against the reference variant on the items both scored, and plots: a metric
against a numeric swept key with its interval band, bars otherwise."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..contracts import accuracy_headline
from ..jsonl import write_text_atomic
from ..stats import paired_difference, say_paired

if TYPE_CHECKING:
    from ..registry import Registry

RM = "music"  # each variant's RM trained on the mix; its baseline is reported by its own run
SKIPPED = "skipped"  # the eval stage's list of evaluators it passed over, beside their results


def load(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def metrics(report: dict[str, Any], registry: Registry) -> dict[str, dict[str, Any]]:
    """metric -> {value, ci95, group, hits (item -> 0/1, for pairing)}: each evaluator's own
    headline (:meth:`music_core.contracts.Evaluator.headline`), the trainer's held-out accuracy
    where no evaluator gave one, and the audit's validity."""
    out: dict[str, dict[str, Any]] = {}
    for name, res in (report.get("evaluations") or {}).items():
        if not isinstance(res, dict) or name == SKIPPED:
            continue
        evaluator = registry.find("evaluator", name)
        # an evaluator whose plugin is not loaded here gets the contract's default reading of its results
        out.update(evaluator.headline(res, RM) if evaluator else accuracy_headline(name, res, RM))
    summary = ((report.get("reward_models") or {}).get(RM) or {}).get("summary") or {}
    if "held-out accuracy" not in out and summary.get("held-out accuracy") is not None:
        out["held-out accuracy"] = {"value": summary["held-out accuracy"], "ci95": None, "group": "accuracy"}
    audit = report.get("audit")
    if audit and audit.get("validity", {}).get("rate") is not None:
        out["audit validity"] = {"value": audit["validity"]["rate"], "ci95": audit["validity"]["ci95"],
                                 "group": "audit validity"}
    return out


def paired(ref: dict[str, Any], other: dict[str, Any]) -> dict[str, Any] | None:
    if not ref.get("hits") or not other.get("hits"):
        return None
    common = sorted(set(ref["hits"]) & set(other["hits"]))
    if not common:
        return None
    return paired_difference([other["hits"][i] for i in common], [ref["hits"][i] for i in common])


def write_comparison(sweep: Any, registry: Registry) -> tuple[Path, Path]:
    rows = []
    swept = sorted({k for v in sweep.variants for k in v.overrides})
    for v in sweep.variants:
        report = load(sweep.root / v.name / "report.json")
        rows.append({"variant": v.name, "overrides": v.overrides, "duplicates": v.duplicates, "finished": report is not None,
                     "metrics": metrics(report, registry) if report else {}})
    ref = next(r for r in rows if r["variant"] == sweep.reference)
    for r in rows:
        r["paired_vs_reference"] = {}
        if r is ref:
            continue
        for m, value in r["metrics"].items():
            d = paired(ref["metrics"].get(m, {}), value)
            if d:
                r["paired_vs_reference"][m] = d
    names = list(dict.fromkeys(m for r in rows for m in r["metrics"]))
    figures = plots(sweep, rows, swept, names)
    data = {"sweep": sweep.name, "reference": sweep.reference, "swept_keys": swept, "metrics": names,
            "variants": [{**r, "metrics": {m: {k: v for k, v in x.items() if k != "hits"} for m, x in r["metrics"].items()}}
                         for r in rows], "figures": figures}
    md_path, js_path = sweep.root / "report.md", sweep.root / "report.json"
    write_text_atomic(js_path, json.dumps(data, indent=2, default=str) + "\n")
    write_text_atomic(sweep.root / "report.csv", to_csv(rows, swept, names))
    write_text_atomic(md_path, to_markdown(sweep, rows, swept, names, figures))
    return md_path, js_path


def _cell(x: dict[str, Any] | None) -> str:
    if not x:
        return "–"
    v = x["value"]
    s = f"{v:.3f}" if abs(v) < 2 else f"{v:.1f}"
    if x.get("ci95"):
        lo, hi = x["ci95"]
        s += f" [{lo:.3f}, {hi:.3f}]" if abs(v) < 2 else f" [{lo:.1f}, {hi:.1f}]"
    return s


def to_markdown(sweep: Any, rows: list[dict[str, Any]], swept: list[str], names: list[str], figures: list[str]) -> str:
    lines = [f"# Sweep `{sweep.name}`: {len(rows)} variants", "",
             f"Swept: {', '.join(f'`{k}`' for k in swept)}. Reference: `{sweep.reference}`. Metrics of each variant's "
             f"`{RM}` RM (trained on its mix), with 95% intervals; paired differences against the reference on the items "
             f"both scored (paired bootstrap interval, exact McNemar p).", ""]
    if not any(r["finished"] for r in rows):
        return "\n".join(lines + ["No variant has finished yet."]) + "\n"
    lines += ["| variant | " + " | ".join(swept) + " | " + " | ".join(names) + " | paired vs reference |",
              "|---|" + "---|" * (len(swept) + len(names) + 1)]
    for r in rows:
        paired_cells = "; ".join(f"{m}: {100 * d['difference']:+.1f} pts [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}], "
                                 f"p={d['p_value']:.3g}" for m, d in r["paired_vs_reference"].items())
        if r["variant"] == sweep.reference:
            paired_cells = "(reference)"
        state = "" if r["finished"] else " (not finished)"
        lines.append(f"| {r['variant']}{state} | " + " | ".join(r["overrides"].get(k, "") for k in swept) + " | "
                     + " | ".join(_cell(r["metrics"].get(m)) for m in names) + f" | {paired_cells or '–'} |")
    lines.append("")
    for r in rows:
        for m, d in r["paired_vs_reference"].items():
            lines.append(f"- {m}: {say_paired(r['variant'], sweep.reference, d)}")
    dups = [f"`{n}`" for r in rows for n in r["duplicates"]]
    if dups:
        lines += ["", f"Resolved to the same config as another variant and run once: {', '.join(dups)}."]
    lines += [""] + [f"![{Path(f).stem}]({Path(f).relative_to(sweep.root).as_posix()})" for f in figures]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, Any]], swept: list[str], names: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    head = ["variant", *swept]
    for m in names:
        head += [m, f"{m} ci95 low", f"{m} ci95 high", f"{m} paired diff vs reference", f"{m} paired p"]
    w.writerow(head)
    for r in rows:
        line: list[Any] = [r["variant"], *(r["overrides"].get(k, "") for k in swept)]
        for m in names:
            x, d = r["metrics"].get(m), r["paired_vs_reference"].get(m)
            line += [x["value"] if x else "", *(x["ci95"] if x and x.get("ci95") else ("", "")),
                     d["difference"] if d else "", d["p_value"] if d else ""]
        w.writerow(line)
    return buf.getvalue()


def _number(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:
        return None


def plots(sweep: Any, rows: list[dict[str, Any]], swept: list[str], names: list[str]) -> list[str]:
    """One figure per metric group: lines with interval bands against a numeric swept key (the
    only one, or the first with the others as series), bars with error bars otherwise."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["finished"]]
    if not done or not names:
        return []
    groups: dict[str, list[str]] = {}
    for r in done:
        for m, x in r["metrics"].items():
            groups.setdefault(x["group"], [])
            if m not in groups[x["group"]]:
                groups[x["group"]].append(m)
    numeric = next((k for k in swept if all(_number(r["overrides"].get(k, "")) is not None for r in done)), None)
    out_dir = sweep.root / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = []
    for group, metric_names in groups.items():
        fig, ax = plt.subplots(figsize=(7, 4))
        if numeric:
            others = [k for k in swept if k != numeric]
            for m in metric_names:
                series: dict[str, list[tuple[float, dict[str, Any]]]] = {}
                for r in done:
                    if m in r["metrics"]:
                        label = ",".join(f"{k}={r['overrides'].get(k)}" for k in others)
                        series.setdefault(label, []).append((_number(r["overrides"][numeric]) or 0.0, r["metrics"][m]))
                for label, pts in series.items():
                    pts.sort(key=lambda p: p[0])
                    xs = [p[0] for p in pts]
                    ys = [p[1]["value"] for p in pts]
                    ax.plot(xs, ys, marker="o", label=f"{m}{' · ' + label if label else ''}")
                    if all(p[1].get("ci95") for p in pts):
                        ax.fill_between(xs, [p[1]["ci95"][0] for p in pts], [p[1]["ci95"][1] for p in pts], alpha=0.2)
            ax.set_xlabel(numeric)
        else:
            width = 0.8 / max(1, len(metric_names))
            for j, m in enumerate(metric_names):
                xs = [i + j * width for i in range(len(done))]
                vals = [r["metrics"].get(m, {}).get("value", float("nan")) for r in done]
                err = [[v - (r["metrics"].get(m, {}).get("ci95") or (v, v))[0] for v, r in zip(vals, done)],
                       [(r["metrics"].get(m, {}).get("ci95") or (v, v))[1] - v for v, r in zip(vals, done)]]
                ax.bar(xs, vals, width, yerr=err, capsize=3, label=m)
            ax.set_xticks([i + width * (len(metric_names) - 1) / 2 for i in range(len(done))])
            ax.set_xticklabels([r["variant"] for r in done], rotation=20, ha="right", fontsize=8)
        ax.set_title(f"{group} ({RM} RM)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / (re.sub(r"[^a-z0-9]+", "_", group.lower()).strip("_") + ".png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        figures.append(str(path))
    return figures
