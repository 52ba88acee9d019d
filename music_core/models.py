"""Where a named model lives: ``resolve_model`` turns what a user wrote (an alias a plugin
registered through ``register_model_aliases``, a path, or a hub id) into something transformers
loads. The bundled aliases (``minilm``, ``smollm2-135m``, ``*.gguf``) live in ``music_assets``."""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

from .errors import MusicError


def cache_dir() -> Path:
    """music's own cache ($MUSIC_CACHE_DIR, default ~/.cache/music): rebuilt models and the like."""
    root = os.environ.get("MUSIC_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "music")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_model(name_or_path: str) -> str:
    """A loadable location: a registered alias (exact name first, then globs such as
    ``*.gguf``), else an existing path, else the string itself as a hub id (which fails
    offline with the hub's own error, caught by the callers)."""
    from .plugins import get_registry

    reg = get_registry()
    aliases = {name: reg.get("model_alias", name) for name in reg.names("model_alias")}
    alias = aliases.get(name_or_path)
    if alias is None:
        alias = next((cls for pattern, cls in sorted(aliases.items())
                      if any(ch in pattern for ch in "*?[") and fnmatch.fnmatch(name_or_path, pattern)), None)
    if alias is not None:
        return alias().resolve(name_or_path)
    path = Path(os.path.expanduser(name_or_path))
    if path.exists():
        return str(path)
    if name_or_path.startswith((".", "/", "~")):
        raise MusicError(f"model folder not found: {path}")
    return name_or_path


def alias_names() -> list[str]:
    """The registered aliases, for messages that suggest one."""
    from .plugins import get_registry

    return get_registry().names("model_alias")


def quiet_transformers() -> None:
    """No per-load progress bars and advisories from transformers: our own progress says more.
    Without CUDA, DeepSpeed (when installed, imported by accelerate) is told it runs on the CPU,
    instead of printing a warning that it found no GPU into every run's output."""
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
