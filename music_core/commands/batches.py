"""``music batches list | cancel``: the vendor batch jobs a run's journal knows of.

A run in batch mode that is stopped for good leaves its jobs running at the vendor (and billed
as they finish); ``cancel`` stops them. A later run re-attaches to cancelled jobs, keeps what
they answered, and sends the rest again."""

from __future__ import annotations

import asyncio
import datetime as dt

import click

from music_core.cli import config_options

from .common import context


def _jobs_and_endpoints(config_path, overrides):
    """The run's context, every job its journal holds (the pool's own journal: one connection),
    and its batch-mode endpoints by the identity the journal records."""
    ctx = context(config_path, overrides)
    if not ctx.paths.cache.exists():
        raise click.ClickException(f"no LLM cache at {ctx.paths.cache}: this run never sent anything")
    batch_endpoints = {name: ctx.llm.endpoint(name) for name, ep in ctx.config.models.items() if ep.mode == "batch"}
    by_identity = {ep.batch.identity: (name, ep) for name, ep in batch_endpoints.items() if ep.batch is not None}
    return ctx, ctx.llm.journal().jobs(), by_identity


@click.group("batches")
def batches_group():
    """Vendor batch jobs of a run in batch mode: list them, cancel the running ones."""


@batches_group.command("list")
@config_options
def list_jobs(config_path, overrides):
    """Every batch job the run's journal holds, newest last."""
    ctx, jobs, by_identity = _jobs_and_endpoints(config_path, overrides)
    asyncio.run(ctx.aclose())
    if not jobs:
        click.echo("no batch jobs")
        return
    click.echo(f"{'job':40s} {'endpoint':14s} {'provider':10s} {'state':10s} {'requests':>8s}  created (UTC)        detail")
    for j in jobs:
        name = by_identity.get(j["endpoint"], ("?",))[0]
        created = dt.datetime.fromtimestamp(j["created"], dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        click.echo(f"{j['job_id']:40s} {name:14s} {j['provider']:10s} {j['state']:10s} {j['items']:>8d}  {created}  "
                   f"{j['detail'] or ''}")


@batches_group.command("cancel")
@config_options
def cancel_jobs(config_path, overrides):
    """Cancel the run's jobs still running at the vendor (those of its batch-mode endpoints)."""
    ctx, jobs, by_identity = _jobs_and_endpoints(config_path, overrides)
    open_jobs = [j for j in jobs if j["state"] == "submitted"]

    async def cancel() -> list[tuple[str, str]]:
        done = []
        try:
            for j in open_jobs:
                if j["endpoint"] not in by_identity:
                    done.append((j["job_id"], "skipped: its endpoint is not in this config (or not in batch mode)"))
                    continue
                name, ep = by_identity[j["endpoint"]]
                try:
                    await ep.provider.batch_cancel(j["job_id"])
                    done.append((j["job_id"], f"cancel requested ({name})"))
                except Exception as exc:  # one job's refusal (already ended, say) does not stop the others
                    done.append((j["job_id"], f"not cancelled: {exc}"))
        finally:
            await ctx.aclose()
        return done

    results = asyncio.run(cancel())
    if not results:
        click.echo("no running batch jobs")
    for job_id, what in results:
        click.echo(f"{job_id}: {what}")
    if any(what.startswith("not cancelled") for _, what in results):
        raise SystemExit(1)
