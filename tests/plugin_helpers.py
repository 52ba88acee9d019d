"""Third-party plugins as a user installs them: a package plus a dist-info with an entry point in
group ``music``, on a folder the subprocess gets on its PYTHONPATH; code taken from the docs."""

from __future__ import annotations

import os
import re
from pathlib import Path

DOCS = Path(__file__).parents[1] / "docs" / "hooks.md"


def docs_blocks(hook: str) -> list[str]:
    """The python blocks of one hook's section of docs/hooks.md, verbatim."""
    text = DOCS.read_text()
    section = text[text.index(f"## {hook}"):]
    end = section.find("\n## ", 5)
    section = section if end < 0 else section[:end]  # the last section runs to the end
    return re.findall(r"```python\n(.*?)```", section, re.S)


def install(site: Path, package: str, files: dict[str, str]) -> None:
    pkg = site / package
    pkg.mkdir(parents=True)
    for name, body in files.items():
        (pkg / name).write_text(body)
    info = site / f"{package}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package.replace('_', '-')}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[music]\n{package} = {package}\n")


def env_with(site: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
