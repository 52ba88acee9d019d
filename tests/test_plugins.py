"""The plugin layer on its own: registration, provenance, broken and duplicate plugins,
third-party entry points, allow/block lists, lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from conftest import write_plugin_package

from music_core import hookimpl
from music_core.cli import cli
from music_core.contracts import ContrastOutcome, ContrastStrategy
from music_core.errors import UnknownComponentError
from music_core.plugins import temporary_plugin


class Reverse(ContrastStrategy):
    name = "reverse-test"

    async def contrast(self, request):
        return ContrastOutcome(answer=request.instruction[::-1], modified_instruction=None)


class ReversePlugin:
    @hookimpl
    def register_contrast_strategies(self, register):
        register(Reverse)


def test_register_and_unregister_per_test(plugins):
    with temporary_plugin(ReversePlugin(), "reverse") as rec:
        assert rec.status == "ok"
        entry = plugins.registry.entry("contrast_strategy", "reverse-test")
        assert entry.obj is Reverse and entry.plugin == "reverse"
    with pytest.raises(UnknownComponentError, match="reverse-test"):
        plugins.registry.get("contrast_strategy", "reverse-test")


def test_find_is_none_only_for_an_unknown_name_and_a_components_own_error_surfaces(plugins):
    from types import SimpleNamespace

    from music_core.contracts import Trainer
    from music_core.stages import describe_trainer

    class Broken(Trainer):
        name = "broken-describe-test"

        @classmethod
        def describe(cls, cfg):
            raise ImportError("no module named 'missing_dep'")

    class BrokenPlugin:
        @hookimpl
        def register_trainers(self, register):
            register(Broken)

    reg = plugins.registry
    assert reg.find("contrast_strategy", "reverse-test") is None and reg.find("trainer", None) is None
    assert describe_trainer(SimpleNamespace(registry=reg), SimpleNamespace(trainer="nope")) == "nope (not registered)"
    with temporary_plugin(ReversePlugin(), "reverse"), temporary_plugin(BrokenPlugin(), "broken"):
        reg = plugins.registry  # rebuilt with the two plugins
        assert reg.find("contrast_strategy", "reverse-test") is Reverse
        with pytest.raises(ImportError, match="missing_dep"):  # not hidden as "(not registered)"
            describe_trainer(SimpleNamespace(registry=reg), SimpleNamespace(trainer="broken-describe-test"))


def test_duplicate_name_names_both_plugins(plugins):
    class Again:
        @hookimpl
        def register_contrast_strategies(self, register):
            register(Reverse)

    with temporary_plugin(ReversePlugin(), "first"), temporary_plugin(Again(), "second") as rec:
        reg = plugins.registry
        assert reg.entry("contrast_strategy", "reverse-test").plugin == "first"
        assert rec.status == "broken"
        assert "'first'" in rec.error and "'second'" in rec.error and "registered twice" in rec.error


def test_wrong_type_is_rejected_with_the_plugin_named(plugins):
    class Bad:
        @hookimpl
        def register_trainers(self, register):
            register(object)

    with temporary_plugin(Bad(), "bad-trainer") as rec:
        _ = plugins.registry
        assert rec.status == "broken"
        assert "bad-trainer" in rec.error and "Trainer subclass" in rec.error


def test_unknown_hook_name_marks_plugin_broken(plugins):
    class Typo:
        @hookimpl
        def register_contrast_stratgies(self, register):  # typo on purpose
            pass

    with temporary_plugin(Typo(), "typo") as rec:
        assert rec.status == "broken" and "register_contrast_stratgies" in rec.error


def test_third_party_entry_point_plugin(tmp_path, install_package, plugins):
    body = textwrap.dedent('''
        from music_core import hookimpl
        from music_core.contracts import ContrastOutcome, ContrastStrategy

        class Shout(ContrastStrategy):
            name = "shout"
            async def contrast(self, request):
                return ContrastOutcome(answer=request.instruction.upper(), modified_instruction=None)

        @hookimpl
        def register_contrast_strategies(register):
            register(Shout)
    ''')
    install_package(write_plugin_package(tmp_path, "music-shout", "music_shout", body))
    from music_core.plugins import get_plugins

    ps = get_plugins()
    entry = ps.registry.entry("contrast_strategy", "shout")
    assert entry.distribution == "music-shout" and entry.version == "0.0.1"
    assert entry.module == "music_shout"
    result = CliRunner().invoke(cli, ["plugins", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["components"]
    assert {"name": "shout", "kind": "contrast_strategy", "plugin": "music_shout", "module": "music_shout",
            "distribution": "music-shout", "version": "0.0.1", "status": "ok"} in rows
    # selectable by name in config
    from music_core.config import load_config

    cfg = load_config(None, ["synth.strategy=shout"])
    assert ps.registry.create("contrast_strategy", cfg.synth.strategy).name == "shout"


def test_broken_plugin_is_reported_and_cli_keeps_working(tmp_path, install_package, plugins):
    body = "import this_module_does_not_exist_anywhere\n"
    install_package(write_plugin_package(tmp_path, "music-broken", "music_broken", body))
    runner = CliRunner()
    result = runner.invoke(cli, ["plugins", "list", "--json"])
    assert result.exit_code == 0
    plugins_rows = {p["name"]: p for p in json.loads(result.output)["plugins"]}
    broken = plugins_rows["music_broken"]
    assert broken["status"] == "broken"
    assert 'Error importing plugin "music_broken"' in broken["error"]
    assert "this_module_does_not_exist_anywhere" in broken["error"]  # the traceback
    result = runner.invoke(cli, ["config", "show"])
    assert result.exit_code == 0 and "synth:" in result.output


def test_block_and_allow_lists(monkeypatch, plugins):
    from music_core import plugins as pl

    monkeypatch.setenv("MUSIC_BLOCK_PLUGINS", "music_openai")
    pl.reset()
    recs = pl.get_plugins().records
    assert recs["music_openai"].status == "skipped" and "MUSIC_BLOCK_PLUGINS" in recs["music_openai"].error
    monkeypatch.delenv("MUSIC_BLOCK_PLUGINS")
    monkeypatch.setenv("MUSIC_LOAD_PLUGINS", "music_local")
    pl.reset()
    recs = pl.get_plugins().records
    assert recs["music_local"].status == "ok"
    assert recs["music_openai"].status == "skipped"
    assert recs["music_core.commands"].status == "ok"  # the core's own commands always load


def test_plugin_commands_join_the_cli(plugins):
    @click.command("hello-test")
    def hello():
        click.echo("hi from a plugin")

    class P:
        @hookimpl
        def register_commands(self, register):
            register(hello)

    with temporary_plugin(P(), "hello"):
        result = CliRunner().invoke(cli, ["hello-test"])
        assert result.exit_code == 0 and "hi from a plugin" in result.output


HEAVY = ("torch", "transformers", "openai", "anthropic", "google.genai", "datasets", "accelerate")


@pytest.mark.parametrize("args", [["--help"], ["plugins", "list"], ["plugins", "list", "--json"]])
def test_cli_imports_no_heavy_module(args):
    code = ("import sys; from music_core.cli import main\n"
            f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
            f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
            "print('HEAVY', heavy, file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stderr, out.stderr


def test_importtime_of_cli_module():
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import music_core.cli"],
                         capture_output=True, text=True, check=True)
    modules = {line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}
    assert not modules & {"torch", "transformers", "openai", "anthropic", "google"}


def test_the_core_imports_no_bundled_plugin():
    """The core talks to plugins only through the registry and the contracts: no module of
    music_core imports a bundled plugin package (they are installable on their own)."""
    import ast

    root = Path(__file__).parents[1]
    bundled = {p.name for p in (root / "plugins").iterdir() if (p / "__init__.py").exists()}
    offenders = []
    for path in (root / "music_core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            offenders += [f"{path.relative_to(root)}: {n}" for n in names if n.split(".")[0] in bundled]
    assert bundled and not offenders, offenders


def test_the_component_base_builds_opts_from_options_class_naming_the_kinds_key():
    from dataclasses import dataclass

    from music_core.contracts import PairFilter
    from music_core.errors import ConfigError

    @dataclass
    class LoudOptions:
        volume: int = 1

    class Loud(ContrastStrategy):
        name = "loud-test"
        options_class = LoudOptions

        async def contrast(self, request):
            raise NotImplementedError

    assert Loud({"volume": 3}).opts == LoudOptions(3) and Loud().opts == LoudOptions(1)
    with pytest.raises(ConfigError, match=r"synth\.strategy_options\.loudness"):
        Loud({"loudness": 3})
    assert not hasattr(Reverse(), "opts")  # no options_class: a subclass may still build its own
    assert PairFilter.options_key == "synth.filter_options"
