"""Anthropic's Messages API."""

from music_core import hookimpl

from .provider import AnthropicProvider


@hookimpl
def register_chat_providers(register):
    register(AnthropicProvider)
