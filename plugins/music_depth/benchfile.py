"""The depth benchmark as a file: conversations read under the record rule, pairs written as
JSONL in the project's pair format (``datasets.load_dataset("json", ...)`` reads it), a card
beside it that says how it was made, and the pairs read back (each checked to be a depth pair)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from music_core import records
from music_core.data import Conversation, PreferencePair
from music_core.formats import load_conversations, pair_from_record, read_each
from music_core.jsonl import write_jsonl_atomic, write_text_atomic
from music_core.records import UnusableRecord

from .build import KINDS, Built, divergence

DEFECT_WORDS = {
    "off-topic": "an answer from another conversation at a similar position (the same assistant turn number where "
                 "one exists, else the nearest), drawn with the seed",
    "repeat": "the previous assistant answer repeated, ignoring the new instruction (not at the first answer)",
    "first-sentence": "the answer cut to its first sentence (only where that shortens it)",
}


def card_path(out: str | Path) -> Path:
    """``depth.jsonl`` -> ``depth.card.md`` (any other name: ``NAME.card.md``)."""
    out = Path(out)
    return out.with_name(out.name.removesuffix(".jsonl") + ".card.md")


def read_conversations(path: str) -> tuple[list[Conversation], dict[str, Any]]:
    """Conversations (message lists) or pairs (their chosen sides) from any file the readers
    accept; unusable records are skipped and counted in the enclosing reading scope. Returns the
    conversations and the read summary."""
    with records.tally_for(path) as tally:
        convs = load_conversations(path)
    return convs, tally.summary()


def write_benchmark(built: Built, out: str | Path, *, source: str, read: dict[str, Any], depths: list[int],
                    kinds: list[str], seed: int, command: str) -> tuple[Path, Path]:
    """The pairs file and its card; returns both paths."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(out, (p.to_dict() for p in built.pairs))
    card = card_path(out)
    write_text_atomic(card, card_text(built, out, source=source, read=read, depths=depths, kinds=kinds, seed=seed,
                                      command=command))
    return out, card


def card_text(built: Built, out: Path, *, source: str, read: dict[str, Any], depths: list[int], kinds: list[str],
              seed: int, command: str) -> str:
    counts = built.counts()
    cell = lambda d, k: str(counts["by_depth_kind"].get(f"{d}/{k}", 0))  # noqa: E731
    lines = [f"# Depth benchmark: `{out.name}`", "",
             "Pairs identical except one assistant answer, `d` answers from the end (`d = 0` the last answer); every "
             "later message is unchanged, so a reward model sees the defect only from what follows it. Chosen is the "
             "original conversation (trailing user turns trimmed), rejected the same with the defect. Made by rule, "
             "with no LLM call.", "",
             "## How it was made", "",
             f"- command: `{command}`",
             f"- source: `{source}` (its licence is as its source says)",
             f"- read: {records.describe_read(read)}",
             f"- conversations: {built.conversations} read, {built.used} gave at least one pair",
             f"- depths: {', '.join(map(str, depths))}; defect kinds: {', '.join(kinds)}; seed: {seed}",
             f"- pairs: {len(built.pairs)}", ""]
    if built.left_out:
        lines += ["Not made (a depth past the conversation's answers, a defect that would not change the answer):", ""]
        lines += [f"- {why}: {n}" for why, n in sorted(built.left_out.items())] + [""]
    lines += ["## Pairs by depth and defect", "", "| d | " + " | ".join(kinds) + " | all |", "|---|" + "---|" * (len(kinds) + 1)]
    for d in depths:
        lines.append(f"| {d} | " + " | ".join(cell(d, k) for k in kinds) + f" | {counts['by_depth'].get(str(d), 0)} |")
    lines += ["", "## Defects", ""] + [f"- `{k}`: {DEFECT_WORDS[k]}" for k in KINDS if k in kinds]
    lines += ["", "## Format", "",
              "JSON Lines, one `PreferencePair` a line: `id` (`<source id>/d<depth>/<defect>`), `chosen`, `rejected` "
              "(lists of `{role, content}`), `source`, `meta` (`source_id`, `depth`, `num_turns`: assistant turns, "
              "`defect`, `message_index`: the changed message). Read it with "
              f"`datasets.load_dataset(\"json\", data_files=\"{out.name}\")`, score it with `music eval depth "
              f"eval.depth.data={out.name}`.", ""]
    return "\n".join(lines)


def parse_depth_pair(record: Any) -> PreferencePair:
    """A pair of a depth benchmark: one changed assistant message, and a ``meta`` that agrees
    with it (a record that is not one is unusable, named by the reader)."""
    pair = pair_from_record(record, "trl", "depth")
    for key in ("depth", "defect"):
        if key not in pair.meta:
            raise UnusableRecord("missing_field", f"meta has no {key!r} (not a depth pair: make one with "
                                                  f"`music bench depth`)")
    try:
        index, depth, turns = divergence(pair)
    except ValueError as exc:
        raise UnusableRecord("invalid", f"not a depth pair: {exc}") from None
    if pair.meta["depth"] != depth:
        raise UnusableRecord("invalid", f"meta.depth is {pair.meta['depth']!r} but the pair differs at depth {depth}")
    pair.meta = {**pair.meta, "source_id": str(pair.meta.get("source_id", pair.id)), "num_turns": turns,
                 "message_index": index}
    return pair


def read_depth_pairs(path: str) -> list[PreferencePair]:
    return read_each(path, parse_depth_pair, label=path)
