"""Errors that name the thing a user must fix (a file and line, a config key, a plugin)."""

from __future__ import annotations


class MusicError(Exception):
    """Base class: the CLI prints the message and exits non-zero, without a traceback."""

    exit_code = 1


class ConfigError(MusicError):
    """A bad config file, key or value. The message names the key (``synth.turns``)."""

    exit_code = 2


class RecordError(MusicError):
    """A bad record in a data file, located as ``path:line``."""

    exit_code = 3

    def __init__(self, path: str, line: int | None, message: str):
        self.path, self.line, self.reason = str(path), line, message
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")


class PluginError(MusicError):
    """A plugin that failed to load or registered something invalid; names the plugin."""

    exit_code = 4


class UnknownComponentError(MusicError):
    """A component name that no loaded plugin registered; lists the ones that exist."""

    exit_code = 2
