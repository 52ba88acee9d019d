"""Google Gemini through the ``google-genai`` SDK (Gemini API key or Vertex AI)."""

from music_core import hookimpl

from .provider import GeminiProvider


@hookimpl
def register_chat_providers(register):
    register(GeminiProvider)
