"""Benchmark contamination: does an evaluation item share a long word n-gram (13 words by default,
the length GPT-3's contamination analysis used) with the prompts the reward model trained on?

The training prompts are the user turns of the RM's training mix (``eval.contamination.data``,
default: the run's mix train split, which holds the baseline's original pairs too). Every
evaluator asks :func:`for_run` once and flags its items; ``eval.contamination.exclude`` scores
without the flagged ones. The count is always in the report.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .data import Message

if TYPE_CHECKING:
    from .context import RunContext

T = TypeVar("T")
WORD = re.compile(r"\w+", re.UNICODE)
_CACHE: dict[tuple[str, float, int], Contamination] = {}


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = WORD.findall(text.lower())
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def prompt_text(messages: Iterable[Message]) -> str:
    """What a conversation asks: its user turns, one after another."""
    return "\n".join(m["content"] for m in messages if m["role"] == "user")


@dataclass
class Contamination:
    source: str
    n: int
    exclude: bool
    train_ngrams: set[tuple[str, ...]] = field(default_factory=set, repr=False)

    def flags(self, prompts: list[str]) -> list[bool]:
        return [not self.train_ngrams.isdisjoint(ngrams(p, self.n)) for p in prompts]

    def summary(self, flags: list[bool]) -> dict[str, Any]:
        return {"checked": True, "against": self.source, "ngram": self.n, "items": len(flags),
                "contaminated": sum(flags), "excluded": sum(flags) if self.exclude else 0}


def not_checked(reason: str) -> dict[str, Any]:
    return {"checked": False, "reason": reason, "contaminated": None, "excluded": 0}


def for_run(ctx: RunContext) -> Contamination | str:
    """The check against this run's training prompts, or why there is none."""
    cfg = ctx.config.eval.contamination
    path = Path(cfg.data) if cfg.data else ctx.paths.mix_file("train")
    if not path.exists():
        return (f"no training data to compare with ({path} does not exist; set eval.contamination.data to the "
                f"RM's training pairs)")
    key = (str(path), path.stat().st_mtime, cfg.ngram)
    if key not in _CACHE:
        from .formats import load_pairs

        grams: set[tuple[str, ...]] = set()
        for pair in load_pairs(str(path)):
            grams |= ngrams(prompt_text(pair.chosen), cfg.ngram)
        _CACHE[key] = Contamination(str(path), cfg.ngram, False, grams)
    found = _CACHE[key]
    return Contamination(found.source, found.n, cfg.exclude, found.train_ngrams)


def check(ctx: RunContext, prompts: list[str]) -> tuple[list[bool], dict[str, Any]]:
    """Flags for these items' prompts (all False when nothing can be checked) and the summary."""
    c = for_run(ctx)
    if isinstance(c, str):
        return [False] * len(prompts), not_checked(c)
    flags = c.flags(prompts)
    return flags, c.summary(flags)


def excluded(ctx: RunContext, flags: list[bool]) -> list[bool]:
    """Which items to leave out of scoring (the flagged ones, when asked to)."""
    return flags if ctx.config.eval.contamination.exclude else [False] * len(flags)


def screen(ctx: RunContext, items: list[T], prompt: Callable[[T], str]) -> tuple[list[T], dict[str, Any]]:
    """Every evaluator's filter: check the items' prompts (``prompt(item)``) against the run's
    training prompts; the items left to score (the flagged ones left out where
    ``eval.contamination.exclude`` asks; their count is the summary's ``excluded``) and the
    summary for the report."""
    flags, summary = check(ctx, [prompt(item) for item in items])
    return [item for item, out in zip(items, excluded(ctx, flags)) if not out], summary


def describe(summary: dict[str, Any]) -> str:
    if not summary.get("checked"):
        return f"contamination not checked: {summary.get('reason')}"
    s = (f"{summary['contaminated']} of {summary['items']} items share a {summary['ngram']}-word n-gram with the "
         f"training prompts (`{summary['against']}`)")
    return s + (f"; {summary['excluded']} excluded from scoring" if summary["excluded"] else
                "; scored with them (eval.contamination.exclude=true leaves them out)")
