"""Shared helpers for tests that drive providers through the execution layer."""

from __future__ import annotations

from music_core.config.schema import EndpointConfig
from music_core.llm.cache import CallCache
from music_core.llm.executor import Endpoint

KEY = "sk-TEST-do-not-leak-5f3a9c"
PROVIDERS = {
    "openai": ("music_openai.provider", "OpenAIProvider", "music_openai.testing", "openai_server", "/v1", "OPENAI_API_KEY"),
    # the same provider through the official SDK (a base_url otherwise selects the raw transport)
    "openai-sdk": ("music_openai.provider", "OpenAIProvider", "music_openai.testing", "openai_server", "/v1", "OPENAI_API_KEY"),
    "anthropic": ("music_anthropic.provider", "AnthropicProvider", "music_anthropic.testing", "anthropic_server", "", "ANTHROPIC_API_KEY"),
    "gemini": ("music_gemini.provider", "GeminiProvider", "music_gemini.testing", "gemini_server", "", "GEMINI_API_KEY"),
}


def server_for(provider: str, **kw):
    import importlib

    _, _, mod, fn, _, _ = PROVIDERS[provider]
    return getattr(importlib.import_module(mod), fn)(**kw)


def endpoint(provider: str, server, cache: CallCache | None = None, **overrides) -> Endpoint:
    import importlib

    mod, cls_name, _, _, suffix, env = PROVIDERS[provider]
    cls = getattr(importlib.import_module(mod), cls_name)
    if provider == "openai-sdk":
        provider = "openai"
        overrides["options"] = {"http": "aiohttp", **overrides.get("options", {})}
    cfg = EndpointConfig(provider=provider, model=overrides.pop("model", "fake-model"), base_url=server.url + suffix,
                         api_key_env=env, retry_backoff_s=overrides.pop("retry_backoff_s", 0.001),
                         timeout_s=overrides.pop("timeout_s", 5.0), **overrides)
    return Endpoint(provider, cfg, cls(cfg), cache)
