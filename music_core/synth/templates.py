"""Versioned prompt templates: YAML files beside the plugin that uses them, never prompts in
code. A template names itself and its version; both go into every pair's provenance."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError


@dataclass
class Template:
    name: str
    version: int
    system: str = ""
    instruction: str = ""
    guidance: str = ""
    few_shot: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    @property
    def tag(self) -> str:
        return f"{self.name}/v{self.version}"

    def render(self, text: str, **values: Any) -> str:
        try:
            return text.format(**values)
        except KeyError as exc:
            raise ConfigError(f"template {self.path}: unknown placeholder {exc}") from None


def load_template(path: str | Path) -> Template:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"template {path}: {exc}") from None
    if not isinstance(data, dict) or "name" not in data or "version" not in data:
        raise ConfigError(f"template {path}: needs at least 'name' and 'version'")
    known = {"name", "version", "system", "instruction", "guidance", "few_shot"}
    return Template(name=str(data["name"]), version=int(data["version"]), system=data.get("system", "") or "",
                    instruction=data.get("instruction", "") or "", guidance=data.get("guidance", "") or "",
                    few_shot=list(data.get("few_shot") or []),
                    extra={k: v for k, v in data.items() if k not in known}, path=str(path))
