"""Config: the typed schema and its loader."""

from .load import load_config, options, parse_shard, to_yaml
from .schema import EndpointConfig, MusicConfig

__all__ = ["EndpointConfig", "MusicConfig", "load_config", "options", "parse_shard", "to_yaml"]
