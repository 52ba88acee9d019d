"""``music synth | audit | mix | train | eval | run``."""

from __future__ import annotations

import click

from music_core.cli import config_options

from .common import context, echo_kv


@click.command()
@config_options
@click.option("--shard", default=None, metavar="I/N", help="synthesize seeds i, i+n, ... into a shard file")
def synth(config_path, overrides, shard):
    """Roll out MUSIC pairs from seed conversations (resumable: rerun to continue)."""
    from music_core import progress
    from music_core.synth.runner import run_synth

    ctx = context(config_path, overrides, [f"synth.shard={shard}"] if shard else None)
    try:
        stats = run_synth(ctx)
    finally:
        progress.stop()
    echo_kv("synth done", {"pairs written": stats["written"], "errors": stats["errors"], "filtered": stats["filtered"],
                           "already done": stats["already_done"], "output": stats["output"], "report": stats["report"]})


@click.command()
@config_options
@click.option("--pairs", "pairs_file", default=None, metavar="FILE",
              help="audit this preference file instead of the run's synthesis output (audit.pairs)")
@click.option("--known", "known_file", default=None, metavar="FILE",
              help="known-answer pairs (chosen known better) to calibrate the auditor on (audit.known_pairs)")
@click.option("--labels", "labels_file", default=None, metavar="FILE",
              help="human labels (labels.jsonl from `music inspect`): agreement with the pair label, auditor and RMs")
@click.option("--rm", "rms", multiple=True, metavar="NAME=PATH", help="reward model for human vs RM agreement (repeatable)")
@click.option("--dry-run", is_flag=True, help="print what the audit would judge, its calls and price; call nothing")
def audit(config_path, overrides, pairs_file, known_file, labels_file, rms, dry_run):
    """Judge every synthetic pair with the auditor (roles.auditor) in both orders, whole and turn by
    turn, calibrated on known pairs: is the rejected branch really worse? (resumable)"""
    from music_core import progress

    extra = [f"audit.pairs={pairs_file}"] if pairs_file else []
    extra += [f"audit.known_pairs={known_file}"] if known_file else []
    extra += [f"audit.labels={labels_file}"] if labels_file else []
    extra += [f"audit.reward_models.{r.split('=', 1)[0]}={r.split('=', 1)[1]}" for r in rms if "=" in r]
    ctx = context(config_path, overrides, extra)
    if dry_run:
        from music_core.audit.plan import describe, estimate
        from music_core.plan import print_cost, print_rows

        click.echo(f"music audit plan (dry run: nothing is called) -> {ctx.paths.audit_dir}\n  {describe(ctx)}")
        print_cost(*print_rows(ctx, estimate))
        return
    from music_core.audit import run_audit

    try:
        summary = run_audit(ctx)
    finally:
        progress.stop()
    lo, hi = summary["ci95"] or (float("nan"), float("nan"))
    echo_kv("audit done", {"pairs": summary["pairs"], "validity": f"{summary['validity']:.1%} [{lo:.1%}, {hi:.1%}]",
                           "wire calls": summary["wire_calls"], "records": summary["audit"],
                           "report": summary["report"]})


@click.command()
@config_options
def mix(config_path, overrides):
    """Mix synthesized pairs with the original data into train/eval splits."""
    from music_core.mix import run_mix

    ctx = context(config_path, overrides)
    summary = run_mix(ctx)
    echo_kv("mix done", {"train": summary["train"], "eval": summary["eval"], "outputs": summary["outputs"]})


@click.command()
@config_options
def train(config_path, overrides):
    """Train a reward model (train.trainer) and save it as a Hugging Face folder."""
    from music_core.training_stage import train_reward_model

    ctx = context(config_path, overrides)
    result = train_reward_model(ctx)
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return  # under `accelerate launch`, one summary, from the main process
    echo_kv("train done", {"model": result.model_dir, **{k: v for k, v in result.metrics.items() if not isinstance(v, dict)}})


class EvalGroup(click.Group):
    """``music eval <command>``: one subcommand per registered evaluator."""

    def _evaluators(self) -> dict:
        from music_core.plugins import get_registry

        reg = get_registry()
        out = {}
        for name in reg.names("evaluator"):
            cls = reg.get("evaluator", name)
            out[cls.command or name] = name
        return out

    def list_commands(self, ctx):
        return sorted(self._evaluators())

    def get_command(self, ctx, cmd_name):
        evaluators = self._evaluators()
        if cmd_name not in evaluators:
            return None
        name = evaluators[cmd_name]

        @click.command(cmd_name, help=f"Run the {name!r} evaluator on eval.reward_models (or --rm NAME=PATH).")
        @config_options
        @click.option("--rm", "rms", multiple=True, metavar="NAME=PATH", help="reward model to evaluate (repeatable)")
        @click.option("--judge", "judges", multiple=True, metavar="NAME=ENDPOINT",
                      help="an LLM judge (an endpoint under models) scored beside the RMs on the same items, in "
                           "pairwise evaluators (eval.judges; repeatable)")
        def _cmd(config_path, overrides, rms, judges):
            from music_core.evaluation import run_evaluator

            for j in judges:
                if "=" not in j or not j.split("=", 1)[0] or not j.split("=", 1)[1]:
                    raise click.BadParameter(f"{j!r}: expected NAME=ENDPOINT (an endpoint under models)",
                                             param_hint="--judge")
            extra = [f"eval.judges.{j.split('=', 1)[0]}={j.split('=', 1)[1]}" for j in judges]
            ctx_ = context(config_path, overrides, extra, evaluators=(name,))  # its options, even if not in eval.evaluators
            report = run_evaluator(ctx_, name, dict(r.split("=", 1) for r in rms) or None)
            echo_kv(f"eval {cmd_name} done", {"results": report["results_path"], "report": report["markdown_path"]})

        return _cmd


@click.group("eval", cls=EvalGroup)
def eval_group():
    """Evaluate reward models: multi-turn Best-of-N, RewardBench, pairwise accuracy."""


@click.command()
@config_options
@click.option("--dry-run", is_flag=True, help="print the plan, calls per role and estimated tokens; call nothing")
def run(config_path, overrides, dry_run):
    """The whole experiment: synth, mix, train a baseline and a MUSIC RM, evaluate, report."""
    from music_core.pipeline import run_pipeline

    ctx = context(config_path, overrides, ["run.dry_run=true"] if dry_run else None)
    run_pipeline(ctx)


@click.command()
@config_options
@click.option("--reference", default=None, metavar="VARIANT", help="the variant the others are compared with")
@click.option("--launcher", default=None, help="registered launcher (sweep.launcher): local, submitit")
@click.option("--jobs", default=None, type=int, help="variants at once (sweep.jobs)")
@click.option("--name", default=None, help="the sweep's name (sweep.name): runs/<name>")
@click.option("--dry-run", is_flag=True, help="list every variant, what it shares, its calls and price; call nothing")
def sweep(config_path, overrides, reference, launcher, jobs, name, dry_run):
    """Variants of `music run` from Hydra-style overrides (key=a,b,c; the product of all swept keys)
    or the config's sweep: section; steps with the same inputs made once; one comparison table."""
    from music_core.sweep.runner import run_sweep

    run_sweep(config_path, tuple(overrides), reference=reference, dry_run=dry_run, launcher=launcher, jobs=jobs,
              name=name)
