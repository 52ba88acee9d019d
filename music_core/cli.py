"""The ``music`` command line. Core commands live here; plugins add theirs through
``register_commands`` (synth, mix, train, eval and run come from the core's own plugin,
:mod:`music_core.commands`). Importing this module imports no torch and no provider SDK."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from . import __version__
from .errors import MusicError

CONFIG_HELP = "YAML config (default: the offline embedded default)"


def config_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--config FILE`` plus trailing ``key=value`` OmegaConf overrides, for every command."""
    fn = click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")(fn)
    fn = click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, help=CONFIG_HELP)(fn)
    return fn


def load_cli_config(config_path: str | None, overrides: tuple[str, ...], evaluators: tuple[str, ...] = ()):
    from .config import load_config

    return load_config(config_path, list(overrides), evaluators=evaluators)


class MusicGroup(click.Group):
    """Adds plugin commands lazily, and reports broken plugins once per invocation."""

    def _plugin_commands(self) -> dict[str, click.Command]:
        from .plugins import get_registry

        reg = get_registry()
        return {name: reg.get("command", name) for name in reg.names("command")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._plugin_commands()))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return super().get_command(ctx, name) or self._plugin_commands().get(name)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        if args and args[0] != "plugins":  # `music plugins list` shows broken plugins itself
            warn_broken_plugins()
        return super().resolve_command(ctx, args)


def warn_broken_plugins() -> None:
    from .plugins import get_plugins

    for rec in get_plugins().broken():
        first = next((ln for ln in reversed(rec.error.strip().splitlines()) if ln.strip()), rec.error)
        click.echo(f"warning: plugin {rec.name!r} is broken ({first.strip()}); see `music plugins list`", err=True)


@click.group(cls=MusicGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="music")
def cli() -> None:
    """MUSIC: multi-turn reward models from multi-step instruction contrast.

    Quick start: `music run` runs the whole pipeline offline on CPU.
    """


@cli.group()
def plugins() -> None:
    """Inspect loaded plugins and what they registered."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def plugins_list(as_json: bool) -> None:
    """Every registered component (name, kind, plugin module, distribution, version, status) and
    every plugin that failed to load."""
    from .plugins import get_plugins

    ps = get_plugins()
    reg = ps.registry
    rows = [{"name": r.name, "kind": r.kind, "plugin": r.plugin, "module": r.module,
             "distribution": r.distribution, "version": r.version, "status": "ok"} for r in reg.all()]
    plugins_rows = [{"name": p.name, "module": p.module, "source": p.source, "distribution": p.distribution,
                     "version": p.version, "status": p.status, "error": p.error} for p in ps.records.values()]
    if as_json:
        click.echo(json.dumps({"components": rows, "plugins": plugins_rows}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="registered components")
    for col in ("name", "kind", "plugin module", "distribution", "version", "status"):
        table.add_column(col)
    for r in rows:  # bundled plugins ship in the music-rm distribution
        table.add_row(r["name"], r["kind"], r["module"], r["distribution"] or "music-rm", r["version"] or "-", r["status"])
    for p in plugins_rows:
        if p["status"] != "ok":
            table.add_row(p["name"], "plugin", p["module"], p["distribution"] or "music-rm", p["version"] or "-",
                          f"[red]{p['status']}[/red]")
    console = Console()
    console.print(table)
    for p in plugins_rows:
        if p["status"] == "broken":
            console.print(f"[red]plugin {p['name']!r} is broken:[/red]\n{p['error']}", markup=True, highlight=False)


@cli.group()
def config() -> None:
    """Show and check configs."""


@config.command("show")
@click.option("--help-keys", is_flag=True, help="list every key with its type, default and meaning instead")
@config_options
def config_show(config_path: str | None, overrides: tuple[str, ...], help_keys: bool) -> None:
    """Print the resolved config (file, then overrides, over the defaults)."""
    from .config import to_yaml

    cfg = load_cli_config(config_path, overrides)
    if help_keys:
        from .config.load import declared_options
        from .config.schema import describe_keys

        def options_of(kind: str, name: str) -> Any:
            return declared_options(cfg, kind, name)

        for key, type_name, value, meaning in describe_keys(cfg, options_of=options_of):
            click.echo(f"{key} ({type_name}) = {value!r}\n    {meaning}")
        return
    click.echo(to_yaml(cfg), nl=False)


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="music", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except MusicError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted; rerun the same command to resume", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
