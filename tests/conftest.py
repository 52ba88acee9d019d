from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Under pytest-xdist (`make test` runs one worker per core) each worker gets its share of the
# cores: torch's default of one thread per core in every worker oversubscribes the machine, and
# OpenMP threads spin-waiting on each other cost more than the second worker gains. Subprocesses
# (the CLI runs) inherit it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    _share = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    os.environ.setdefault("OMP_NUM_THREADS", str(_share))
    os.environ.setdefault("MKL_NUM_THREADS", str(_share))


@pytest.fixture
def plugins(monkeypatch):
    """A freshly loaded plugin set, forgotten again after the test."""
    from music_core import plugins as pl

    monkeypatch.delenv("MUSIC_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("MUSIC_BLOCK_PLUGINS", raising=False)
    pl.reset()
    yield pl.get_plugins()
    pl.reset()


@pytest.fixture
def install_package(tmp_path, monkeypatch):
    """``pip install`` a package folder into a private target dir and put it on sys.path, so its
    entry points are visible to importlib.metadata without touching the venv."""
    import subprocess

    from music_core import plugins as pl

    def install(pkg_dir: Path) -> Path:
        target = tmp_path / "site"
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--target", str(target), str(pkg_dir)], check=True, capture_output=True)
        monkeypatch.syspath_prepend(str(target))
        monkeypatch.setenv("PYTHONPATH", str(target) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        import importlib

        importlib.invalidate_caches()
        pl.reset()
        return target

    yield install
    pl.reset()


def write_plugin_package(root: Path, dist: str, module: str, body: str, entry_name: str | None = None) -> Path:
    """A minimal third-party plugin package with a ``music`` entry point."""
    pkg = root / dist
    (pkg / module).mkdir(parents=True)
    (pkg / module / "__init__.py").write_text(body)
    (pkg / "pyproject.toml").write_text(f"""
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.0.1"

[project.entry-points.music]
{entry_name or module} = "{module}"

[tool.setuptools]
packages = ["{module}"]
""")
    return pkg


def scripted_trainer_plugin(trainer_name: str, scorer_class: type) -> object:
    """A plugin registering a trainer that trains nothing and loads ``scorer_class(folder name)``:
    the evaluator tests' scripted reward models (``--rm NAME=.../<key>`` picks the script)."""
    from music_core import hookimpl
    from music_core.contracts import Trainer

    class ScriptedTrainer(Trainer):
        name = trainer_name

        def train(self, cfg):
            raise NotImplementedError

        def load_scorer(self, model_dir, batch_size=None):
            return scorer_class(Path(model_dir).name)

    class ScriptedPlugin:
        @hookimpl
        def register_trainers(self, register):
            register(ScriptedTrainer)

    return ScriptedPlugin()
