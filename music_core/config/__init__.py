"""Config: the typed schema and its loader."""

from .load import (
    PROMPT_PROFILES,
    load_config,
    options,
    parse_shard,
    resolve_prompt_profile,
    resolve_user_simulator,
    to_yaml,
)
from .schema import EndpointConfig, MusicConfig

__all__ = ["EndpointConfig", "MusicConfig", "PROMPT_PROFILES", "load_config", "options", "parse_shard",
           "resolve_prompt_profile", "resolve_user_simulator", "to_yaml"]
