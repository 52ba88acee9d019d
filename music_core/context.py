"""The run context handed to every component: config, registry, output paths, and LLM
endpoints by role (created on first use, sharing one call cache)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config.schema import MusicConfig
from .llm.executor import LLMPool, RoleClient
from .paths import RunPaths
from .registry import Registry


class RunContext:
    def __init__(self, config: MusicConfig, registry: Registry | None = None):
        if registry is None:
            from .plugins import get_registry

            registry = get_registry()
        self.config = config
        self.registry = registry
        self.paths = RunPaths(config)  # every file a run reads or writes
        self._pool: LLMPool | None = None
        from . import progress

        progress.enable(config.run.progress, config.run.progress_interval_s)

    # ---- paths (shorthands for the common ones; ``self.paths`` has them all) -------------------
    @property
    def output_dir(self) -> Path:
        return self.paths.root

    @property
    def cache_path(self) -> Path:
        return self.paths.cache

    def synth_output(self) -> Path:
        return self.paths.synth_output

    def mix_dir(self) -> Path:
        return self.paths.mix_dir

    def rm_dir(self, name: str | None = None) -> Path:
        return self.paths.rm_dir(name)

    def eval_dir(self) -> Path:
        return self.paths.eval_root

    @property
    def prompt_profile(self) -> str:
        """``paper`` or ``small-model``: which prompts synthesis components use by default."""
        from .config import resolve_prompt_profile

        return resolve_prompt_profile(self.config)[0]

    # ---- data -----------------------------------------------------------------------------------
    def reading(self, label: str, *, check: bool = True) -> Any:
        """A reading scope under this run's record rule (``records.*``): readers inside count what
        they skip (:mod:`music_core.records`)."""
        from .records import RecordPolicy, reading

        return reading(label, RecordPolicy.of(self.config), check=check)

    # ---- LLMs ----------------------------------------------------------------------------------
    @property
    def llm(self) -> LLMPool:
        if self._pool is None:
            self._pool = LLMPool(self.config, self.registry, str(self.cache_path), show_progress=self.config.run.progress)
        return self._pool

    def role(self, role: str) -> RoleClient:
        return self.llm.for_role(role)

    def component(self, kind: str, name: str, options: dict[str, Any] | None = None) -> Any:
        return self.registry.create(kind, name, options, self)

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None
