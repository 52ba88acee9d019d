"""Meta-tests in the manner of datasette: every hook has a test and is documented, and every
component kind can be listed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from music_core.hookspecs import registry_hooks
from music_core.registry import KINDS

DOCS = (Path(__file__).resolve().parents[1] / "docs" / "hooks.md").read_text()
TESTS = "\n".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py"))


@pytest.mark.parametrize("hook", registry_hooks())
def test_every_hook_is_documented_with_an_example(hook):
    section = re.search(rf"^## {hook}\n(.*?)(?=^## |\Z)", DOCS, re.S | re.M)
    assert section, f"docs/hooks.md has no '## {hook}' section"
    assert "```python" in section.group(1) and f"def {hook}(register)" in section.group(1)


@pytest.mark.parametrize("hook", registry_hooks())
def test_every_hook_has_a_test(hook):
    assert re.search(rf"def test_hook_{hook}\b", TESTS), f"no test named test_hook_{hook}"


def test_every_hook_maps_to_a_component_kind():
    assert sorted(k.hook for k in KINDS.values()) == sorted(registry_hooks())
