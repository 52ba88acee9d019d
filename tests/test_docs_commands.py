"""The commands README.md and docs/ show exist as shown: every `music ...` subcommand and flag
they name is in the CLI's own help, and the quick offline ones run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def music(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "music_core", *args], capture_output=True, text=True, cwd=ROOT)


def shown_commands() -> list[tuple[str, list[str], list[str]]]:
    """(where, subcommand path, flags) for every `music ...` the docs show, in code spans and in
    the README's command table."""
    out = []
    for doc in DOCS:
        text = doc.read_text()
        # code spans, and whole lines of command tables (their descriptions name flags too)
        lines = re.findall(r"`(music [^`]+)`", text) + re.findall(r"^(music [a-z][^\n]*)$", text, re.M)
        for line in lines:
            words = re.split(r"\s{2,}", line)[0].split()[1:]  # the command, not its description
            path = []
            for w in words:
                if not re.fullmatch(r"[a-z][a-z0-9-]*", w):
                    break
                path.append(w)
            # `music eval bon|rewardbench|...`: each alternative is a command of its own
            alts = re.match(r"music ([a-z ]+?) ((?:[a-z0-9]+\|)+[a-z0-9]+)", line)
            flags = re.findall(r"(--[a-z][a-z-]*)", line)
            if alts:
                for alt in alts.group(2).split("|"):
                    out.append((f"{doc.name}: {line}", alts.group(1).split() + [alt], flags))
            else:
                out.append((f"{doc.name}: {line}", path, flags))
    return out


COMMANDS = shown_commands()


def test_the_docs_show_commands():
    assert len(COMMANDS) >= 10


@pytest.mark.parametrize("where,path,flags", COMMANDS, ids=[c[0][:60] for c in COMMANDS])
def test_a_shown_command_and_its_flags_exist(where, path, flags):
    path = [p for p in path if "=" not in p]
    if path and path[-1] in ("command",):  # a placeholder such as `music eval <command>`
        path = path[:-1]
    proc = music(*path, "--help")
    assert proc.returncode == 0, f"{where}: `music {' '.join(path)} --help` failed: {proc.stderr[-500:]}"
    missing = [f for f in flags if f not in proc.stdout and f != "--help"]
    assert not missing, f"{where}: {missing} not among the options of `music {' '.join(path)}`"


@pytest.mark.parametrize("args", [["plugins", "list", "--json"], ["config", "show", "--help-keys"], ["run", "--dry-run"],
                                  ["run", "--config", "configs/paper.yaml", "--dry-run"]])
def test_the_quick_offline_commands_run(args):
    proc = music(*args)
    assert proc.returncode == 0, proc.stderr[-1000:]
    assert proc.stdout.strip()
