"""Config loading: every shipped config validates; bad keys and values are named."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import REPO

from music_core.cli import cli
from music_core.config import load_config
from music_core.errors import ConfigError

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def test_configs_exist():
    names = {p.name for p in CONFIGS}
    assert {"default.yaml", "paper.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates_and_says_how_to_run_it(path: Path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and ("music " in first or "accelerate " in first), first
    if path.name.startswith(("accelerate", "deepspeed", "fsdp")):
        pytest.skip("an accelerate launcher config, not a music config")
    load_config(path)


def test_default_yaml_equals_schema_defaults():
    import dataclasses

    import yaml

    assert load_config(REPO / "configs" / "default.yaml") == load_config(None)
    # and it spells out every key, so that a copy of it shows every setting there is
    written = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())
    assert written == dataclasses.asdict(load_config(None))


def test_overrides_apply():
    cfg = load_config(None, ["synth.turns=4", "models.local.temperature=0.5", "roles.judge=local"])
    assert cfg.synth.turns == 4 and cfg.models["local"].temperature == 0.5


def test_new_endpoint_from_overrides_swaps_a_role():
    cfg = load_config(None, ["models.gpt.provider=openai", "models.gpt.model=gpt-4o-mini", "roles.judge=gpt"])
    assert cfg.models["gpt"].provider == "openai" and cfg.roles.judge == "gpt"


def test_the_default_endpoint_can_change_provider_by_override_and_by_file(tmp_path):
    """Swapping a provider is one of the three uses the framework exists for: the default
    endpoint's local-only options must not follow it to another provider."""
    swap = ["models.local.provider=openai", "models.local.model=x", "models.local.base_url=http://127.0.0.1:9/v1"]
    cfg = load_config(None, swap)
    assert cfg.models["local"].provider == "openai" and cfg.models["local"].options == {}
    path = tmp_path / "swap.yaml"
    path.write_text("models:\n  local: {provider: openai, model: x, base_url: 'http://127.0.0.1:9/v1'}\n")
    assert load_config(path).models["local"].provider == "openai"
    # what the user does set is still checked against the new provider
    with pytest.raises(ConfigError, match="models.local.options.dtype"):
        load_config(None, swap + ["models.local.options.dtype=float32"])
    # and the local provider still gets its own defaults, from LocalOptions
    from music_local.provider import LocalOptions

    assert LocalOptions().dtype == "auto" and LocalOptions().max_batch_size == 32


@pytest.mark.parametrize("override,needle", [
    ("synth.turnz=3", "unknown config key 'synth.turnz' (did you mean 'synth.turns'?)"),
    ("synth.turns=many", "bad value for config key 'synth.turns'"),
    ("roles.judge=nowhere", "config key 'roles.judge': endpoint 'nowhere' is not defined"),
    ("models.x.provider=openai", "config key 'models.x.model' is required"),
    ("synth.shard=3/2", "synth.shard"),
    ("mix.eval_fraction=1.5", "mix.eval_fraction"),
    ("synth.turns", "not of the form key=value"),
])
def test_bad_override_names_the_key(override, needle):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert needle in str(err.value)


@pytest.mark.parametrize("provider,override,needle", [
    ("openai", "options.http=curl", "models.m.options.http': is 'curl'"),
    ("openai", "options.max_token_field=max_tokens", "unknown config key 'models.m.options.max_token_field'"),
    ("anthropic", "options.sampling_params=maybe", "bad value under 'models.m.options'"),
    ("gemini", "options.vertex=true", "unknown config key 'models.m.options.vertex'"),
    ("local", "options.dtype=fp8", "models.m.options.dtype': is 'fp8'"),
])
def test_a_providers_options_are_checked_when_the_config_loads(provider, override, needle):
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"models.m.provider={provider}", "models.m.model=x", f"models.m.{override}"])
    assert needle in str(err.value)


def test_docs_list_every_option_of_every_bundled_provider(plugins):
    import dataclasses

    text = (REPO / "docs" / "providers.md").read_text()
    for name in ("openai", "anthropic", "gemini", "local"):
        cls = plugins.registry.get("chat_provider", name).options_class
        section = text.split(f"### `{name}`")[1].split("###")[0]
        for f in dataclasses.fields(cls):
            assert f"| `{f.name}` |" in section, (name, f.name)


def test_bad_file_names_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("synth:\n  turns: 3\n  strategyy: x\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert str(bad) in str(err.value) and "synth.strategyy" in str(err.value)
    bad.write_text("synth: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_cli_config_show_and_error_exit_code():
    from music_core.cli import main

    runner = CliRunner()
    result = runner.invoke(cli, ["config", "show", "synth.turns=7"])
    assert result.exit_code == 0 and "turns: 7" in result.output
    with pytest.raises(SystemExit) as exit_:
        main(["config", "show", "synth.nope=1"])
    assert exit_.value.code == 2
