"""Errors that name the thing a user must fix (a file and line, a config key, a plugin)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """What a later stage of ``music run`` would fail on, found before its first call (the
    preflight, :mod:`music_core.preflight`): the config ``key`` to fix and what is wrong."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


class MusicError(Exception):
    """Base class: the CLI prints the message and exits non-zero, without a traceback."""

    exit_code = 1


class ConfigError(MusicError):
    """A bad config file, key or value. The message names the key (``synth.turns``)."""

    exit_code = 2


class OptionError(ValueError):
    """Raised by an options dataclass's ``__post_init__`` for a value its type allows but the
    component does not (``OptionError("verdict", "must be auto, logprobs or text")``); the config
    loader reports it as an error of that key."""

    def __init__(self, option: str, message: str):
        super().__init__(f"{option}: {message}")
        self.option, self.message = option, message


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


class PreflightError(MusicError):
    """``music run`` found, before its first call, what a later stage would fail on: every
    problem at once, each naming its config key (``run.preflight=false`` skips the check)."""

    exit_code = 7

    def __init__(self, problems: list):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"music run stopped before its first call: {len(self.problems)} "
                         f"problem{'s' if len(self.problems) != 1 else ''} found (fix them, or skip this check with "
                         f"run.preflight=false):\n{lines}")
