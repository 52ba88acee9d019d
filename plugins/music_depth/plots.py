"""Accuracy against depth, one line per reward model, with 95% interval bars and chance at 0.5."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def depth_curve(r: dict[str, Any], path: Path) -> str | None:
    if not r["models"] or not r["depths"]:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depths = [str(d) for d in r["depths"]]
    fig, ax = plt.subplots(figsize=(1.8 + 0.9 * len(depths), 3.6))
    for k, (name, m) in enumerate(r["models"].items()):
        points = [(int(d), m["by_depth"][d]) for d in depths if m["by_depth"].get(d, {}).get("n")]
        if not points:
            continue
        shift = 0.04 * (k - (len(r["models"]) - 1) / 2)  # side by side, so the bars do not hide each other
        xs = [d + shift for d, _ in points]
        ys = [a["accuracy"] for _, a in points]
        lo = [a["accuracy"] - a["ci95"][0] for _, a in points]
        hi = [a["ci95"][1] - a["accuracy"] for _, a in points]
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=name)
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="chance (a tie is half right)")
    ax.set_xticks([int(d) for d in depths])
    ax.set_xlabel("depth d of the defect (0 = the last answer)")
    ax.set_ylabel("accuracy (95% CI)")
    ax.set_ylim(0, 1.02)
    ax.set_title("Where can the reward model see a defect?")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return str(path)
