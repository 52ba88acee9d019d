"""The win-rate heatmap, like the paper's Figure 2: rows are comparisons, columns prompt set x N."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def heatmap(rows: list[dict[str, Any]], path: Path) -> str | None:
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    comparisons = sorted({r["comparison"] for r in rows})
    columns = sorted({(r["prompt_set"], r["n"]) for r in rows})
    grid = [[float("nan")] * len(columns) for _ in comparisons]
    for r in rows:
        grid[comparisons.index(r["comparison"])][columns.index((r["prompt_set"], r["n"]))] = r["win_rate"]
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(columns), 0.9 + 0.6 * len(comparisons)))
    im = ax.imshow(grid, cmap="RdBu", vmin=0.3, vmax=0.7, aspect="auto")
    ax.set_xticks(range(len(columns)), [f"{s}\nN={n}" for s, n in columns])
    ax.set_yticks(range(len(comparisons)), comparisons)
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            if v == v:
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=9)
    fig.colorbar(im, ax=ax, label="win rate (ties = 0.5)")
    ax.set_title("Multi-turn Best-of-N win rates")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return str(path)
