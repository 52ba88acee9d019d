"""Variants from Hydra's override syntax and the ``sweep:`` section: ``key=a,b,c`` sweeps a key
(``key=[a,b]`` is one list value, quotes keep commas), the command line's axes combine with the
section's grid into the cartesian product, and an explicit list of variants is combined with it.
A variant is named by its overrides as Hydra's ``override_dirname`` names a run: ``key=value``
pairs sorted by key and joined by commas."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError


@dataclass
class Variant:
    name: str
    overrides: dict[str, str]                        # swept key -> value, as an override string
    duplicates: list[str] = field(default_factory=list)  # names of variants that resolved to this config

    def argv(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.overrides.items()]


def _split_values(value: str) -> list[str] | None:
    """``a,b,c`` -> the values of a sweep; None when the value is one value (a list, a quoted
    string, or no comma at top level)."""
    v = value.strip()
    if not v or v[0] in "[{" or v[0] in "'\"":
        return None
    parts, depth, cur, quote = [], 0, "", None
    for ch in v:
        if quote:
            cur += ch
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote, cur = ch, cur + ch
        elif ch in "[{(":
            depth, cur = depth + 1, cur + ch
        elif ch in "]})":
            depth, cur = depth - 1, cur + ch
        elif ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    parts.append(cur.strip())
    return parts if len(parts) > 1 else None


def split_overrides(overrides: list[str] | tuple[str, ...]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """(overrides every variant gets, swept axes)."""
    base: list[str] = []
    axes: list[tuple[str, list[str]]] = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (or key=a,b,c to sweep it)")
        key, value = item.split("=", 1)
        values = _split_values(value)
        if values is None:
            base.append(item)
        elif any(not v for v in values):
            raise ConfigError(f"override {item!r}: an empty value in the sweep")
        else:
            axes.append((key.strip(), values))
    return base, axes


def as_override(value: Any) -> str:
    """A config value (from the sweep: section) written as a command-line override value."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(as_override(v) for v in value) + "]"
    return str(value)


def variant_name(overrides: dict[str, str]) -> str:
    if not overrides:
        return "base"
    name = ",".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    return re.sub(r"[/\\\s]+", "_", name)  # a folder name: no separators or spaces


def build_variants(section: Any, axes: list[tuple[str, list[str]]]) -> list[Variant]:
    grid = {str(k): [as_override(v) for v in vs] for k, vs in dict(section.grid).items()}
    for key, values in axes:
        grid[key] = values  # the command line wins over the file's grid for the same key
    for key, values in grid.items():
        if not values:
            raise ConfigError(f"config key 'sweep.grid.{key}': an empty list of values")
    explicit = [{str(k): as_override(v) for k, v in dict(v).items()} for v in section.variants] or [{}]
    keys = list(grid)
    combos = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))] if keys else [{}]
    out = [Variant("", {**e, **c}) for e in explicit for c in combos]
    if len(out) == 1 and not out[0].overrides:
        raise ConfigError("empty sweep: give key=a,b overrides, sweep.grid or sweep.variants")
    for v in out:
        v.name = variant_name(v.overrides)
    return out
