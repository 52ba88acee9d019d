"""A component's free-form options dict turned into its own dataclass.

Kept apart from the config loader (which loads plugins) so that the component base in
``contracts`` can build ``self.opts`` without an import circle; ``music_core.config.options``
re-exports it."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError, OptionError

T = TypeVar("T")


def options(cls: type[T], values: dict[str, Any] | None, key: str) -> T:
    """Validate a component's free-form options dict against its own dataclass; errors name
    ``key.option`` so the user knows where to look."""
    values = dict(values or {})
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown config key '{key}.{unknown[0]}' (known: {sorted(names)})")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls), OmegaConf.create(values))
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise ConfigError(f"bad value under '{key}': {str(exc).splitlines()[0]}") from None
    except OptionError as exc:  # the options' own rules (__post_init__)
        raise ConfigError(f"config key '{key}.{exc.option}': {exc.message}") from None
    except ValueError as exc:
        raise ConfigError(f"bad value under '{key}': {exc}") from None
