"""In-process generation with transformers: SmolLM2-135M-Instruct by default (offline, CPU),
or any local Hugging Face folder or GGUF file."""

from music_core import hookimpl

from .provider import LocalProvider


@hookimpl
def register_chat_providers(register):
    register(LocalProvider)
