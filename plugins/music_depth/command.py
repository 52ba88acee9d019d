"""``music bench depth``: write a depth benchmark file and its card from any conversations."""

from __future__ import annotations

import click

from music_core.cli import config_options


@click.group("bench")
def bench():
    """Build benchmark files from your own data (`music bench depth`)."""


@bench.command("depth")
@click.option("--conversations", "source", required=True, metavar="FILE",
              help="conversations (message lists) or pairs (their chosen sides): any file the readers accept")
@click.option("--out", required=True, metavar="FILE", help="the pairs file to write (JSONL); the card goes beside it")
@click.option("--depths", default="0,1,2", show_default=True, help="depths to build, comma-separated (0: the last answer)")
@click.option("--kinds", default="off-topic,repeat,first-sentence", show_default=True,
              help="defect kinds, comma-separated")
@click.option("--seed", default=0, type=int, show_default=True, help="seed of the off-topic draws")
@config_options
def depth(source, out, depths, kinds, seed, config_path, overrides):
    """Pairs identical except one assistant answer at depth d from the end (rule-based defects)."""
    from pathlib import Path

    from music_core.cli import load_cli_config
    from music_core.records import RecordPolicy, reading

    from .benchfile import read_conversations, write_benchmark
    from .build import build_pairs, parse_depths, parse_kinds

    try:
        depth_list, kind_list = parse_depths(depths), parse_kinds(kinds)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    cfg = load_cli_config(config_path, overrides)
    with reading(source, RecordPolicy.of(cfg)) as tally:
        convs, _ = read_conversations(source)
    built = build_pairs(convs, depth_list, kind_list, seed)
    if not built.pairs:
        raise click.ClickException(f"{source}: no depth pairs could be made ({built.conversations} conversations; "
                                   f"none has an answer at d = {depths} where a defect of {kinds} applies)")
    command = f"music bench depth --conversations {source} --out {out} --depths {depths} --kinds {kinds} --seed {seed}"
    path, card = write_benchmark(built, out, source=source, read=tally.summary(), depths=depth_list, kinds=kind_list,
                                 seed=seed, command=command)
    side = tally.write_side_file(Path(str(path).removesuffix(".jsonl") + ".skipped.jsonl"))
    counts = built.counts()["by_depth"]
    click.echo(f"music bench depth: {len(built.pairs)} pairs ({', '.join(f'd={d}: {n}' for d, n in counts.items())}) "
               f"from {built.used} of {built.conversations} conversations -> {path}")
    click.echo(f"  card: {card}")
    if side:
        click.echo(f"  skipped records: {side}")
