"""The audit's human section: the labels people gave in ``music inspect`` against the pair's
label, the auditor and each reward model (and each other, where labellers overlap). This is what
makes the audit trustworthy: judge-human agreement on a small human-labelled sample."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..paths import RUN_RMS, labels_beside
from ..scoring import rm_vote
from .agreement import auditor_vote, human_agreement
from .labels import read_labels

if TYPE_CHECKING:
    from ..context import RunContext


def labels_path(ctx: RunContext, pair_files: list[str]) -> Path | None:
    given = ctx.config.audit.labels
    if given:
        if not Path(given).exists():
            raise ConfigError(f"config key 'audit.labels': {given} does not exist")
        return Path(given)
    beside = labels_beside(pair_files[0])
    return beside if beside.exists() else None


def reward_models(ctx: RunContext) -> dict[str, str]:
    given = dict(ctx.config.audit.reward_models)
    if given:
        return given
    return {n: str(ctx.paths.rm_dir(n)) for n in RUN_RMS if (ctx.paths.rm_dir(n) / "config.json").exists()}


def human_section(ctx: RunContext, result: dict[str, Any]) -> dict[str, Any] | None:
    path = labels_path(ctx, result["files"])
    if path is None:
        return None
    rows, warnings = read_labels(path)
    pairs = {p.id: p for p in result["pairs"]}
    unknown = sorted({str(r["pair_id"]) for r in rows} - set(pairs))
    rows = [r for r in rows if str(r["pair_id"]) in pairs]
    auditor = {r["id"]: auditor_vote(r["verdict"]) for r in result["records"]}
    labelled = [pairs[pid] for pid in sorted({str(r["pair_id"]) for r in rows})]
    votes: dict[str, dict[str, str]] = {}
    if labelled:
        from ..evaluation import load_scorer

        for name, folder in reward_models(ctx).items():
            scorer = load_scorer(ctx, folder)
            rc, rr = scorer.score([p.chosen for p in labelled]), scorer.score([p.rejected for p in labelled])
            votes[name] = {p.id: rm_vote(c - r) for p, c, r in zip(labelled, rc, rr)}
    out = human_agreement(rows, auditor, votes)
    out.update(labels_file=str(path), warnings=warnings, labels_for_other_pairs=len(unknown))
    return out


def markdown(h: dict[str, Any]) -> list[str]:
    def cell(c: dict[str, Any], key: str) -> str:
        r = c[key]
        if not r["total"]:
            return "n/a"
        lo, hi = r["ci95"]
        return f"{r['rate']:.2f} [{lo:.2f}, {hi:.2f}] ({r['agree']}/{r['total']})"

    def kap(c: dict[str, Any]) -> str:
        if c["kappa"] is None:
            return "n/a"
        ci = f" [{c['kappa_ci95'][0]:.2f}, {c['kappa_ci95'][1]:.2f}]" if c.get("kappa_ci95") else ""
        return f"{c['kappa']:.2f}{ci}"

    rows = [("human vs the pair's label (is chosen really better?)", h["vs_pair_label"]),
            ("human vs the auditor", h["vs_auditor"])]
    rows += [(f"human vs RM `{name}`", c) for name, c in h["vs_rm"].items()]
    if h["human_vs_human"]:
        rows.append(("human vs human (overlapping labellers)", h["human_vs_human"]))
    lines = ["**Human labels**", "",
             f"{h['labels']} labels of {h['labelled_pairs']} pairs by {', '.join(h['labellers']) or 'nobody'} "
             f"(`{h['labels_file']}`; a relabel supersedes the earlier label). Agreement with ties (both bad counts "
             f"as a tie) and without (FastChat's convention: a tie on either side leaves the item out), Wilson 95% "
             f"intervals; Cohen's kappa with a bootstrap interval.", "",
             "| comparison | with ties | without ties | Cohen's kappa |", "|---|---|---|---|"]
    lines += [f"| {label} | {cell(c, 'with_ties')} | {cell(c, 'without_ties')} | {kap(c)} |" for label, c in rows]
    lines += [f"- warning: {w}" for w in h["warnings"]]
    if h["labels_for_other_pairs"]:
        lines.append(f"- {h['labels_for_other_pairs']} labelled pairs are not among the audited pairs and were left out")
    return lines + [""]
