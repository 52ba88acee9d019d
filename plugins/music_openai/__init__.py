"""OpenAI and every OpenAI-compatible server (vLLM, SGLang, llama.cpp's server, Ollama)."""

from music_core import hookimpl

from .provider import OpenAIProvider


@hookimpl
def register_chat_providers(register):
    register(OpenAIProvider)
