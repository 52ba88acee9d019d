"""The seed source classes. Each loads by local path (file or folder) or hub id under the
record rule: a bad file names itself, an unusable record is skipped and counted."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from music_core.config.schema import DataSourceConfig
from music_core.contracts import Problem, SeedSource
from music_core.data import Conversation, PreferencePair
from music_core.errors import ConfigError
from music_core.formats import load_conversations, load_pairs, read_each
from music_core.records import UnusableRecord

from .hh import hh_conversation, hh_pair
from .ultrainteract import ui_conversation, ui_pair

DATA = Path(__file__).parent / "data"


def _need_path(cfg: DataSourceConfig, name: str) -> str:
    if not cfg.path:
        raise ConfigError(f"seed source {name!r} needs a path (a local file or folder, or a hub id): set its 'path' key")
    return cfg.path


class BuiltinSource(SeedSource):
    name = "builtin"
    description = "101 multi-turn preference pairs written for this project (their chosen sides are the seeds)"
    provides = ("conversations", "pairs")

    @classmethod
    def preflight(cls, cfg: DataSourceConfig, key: str, what: str) -> list[Problem]:
        return []  # shipped data; path is ignored

    def load_pairs(self, cfg: DataSourceConfig) -> list[PreferencePair]:
        return load_pairs(str(DATA / "pairs.jsonl"), "trl", source="builtin")

    def load_conversations(self, cfg: DataSourceConfig) -> list[Conversation]:
        return [Conversation(p.id, p.chosen, "builtin", dict(p.meta)) for p in self.load_pairs(cfg)]


class BuiltinPrompts(SeedSource):
    name = "builtin-prompts"
    description = "24 opening prompts for multi-turn Best-of-N"

    @classmethod
    def preflight(cls, cfg: DataSourceConfig, key: str, what: str) -> list[Problem]:
        return []  # shipped data; path is ignored

    def load_conversations(self, cfg: DataSourceConfig) -> list[Conversation]:
        return load_conversations(str(DATA / "prompts.jsonl"), "messages", source="builtin-prompts")


class _FormatSource(SeedSource):
    fmt = "auto"
    provides = ("conversations", "pairs")
    needs_path = True

    @classmethod
    def required_columns(cls, cfg: DataSourceConfig, what: str) -> tuple[str, ...]:
        fmt = cls.fmt if cfg.format == "auto" else cfg.format
        if fmt == "sharegpt":
            return ("conversations", "chosen", "rejected") if what == "pairs" else ("conversations",)
        if what == "pairs" or fmt in ("skywork", "trl", "music"):
            return ("chosen", "rejected")
        return ("messages",) if fmt == "messages" else ("messages|conversations|chosen",)

    def load_pairs(self, cfg: DataSourceConfig) -> list[PreferencePair]:
        fmt = self.fmt if cfg.format == "auto" else cfg.format
        return load_pairs(_need_path(cfg, self.name), fmt, cfg.split, source=self.name)

    def load_conversations(self, cfg: DataSourceConfig) -> list[Conversation]:
        fmt = self.fmt if cfg.format == "auto" else cfg.format
        return load_conversations(_need_path(cfg, self.name), fmt, cfg.split, source=self.name)


class SkyworkSource(_FormatSource):
    name = "skywork"
    description = "Skywork preference sets: chosen/rejected message lists (seeds: the chosen side)"
    fmt = "skywork"


class TRLSource(_FormatSource):
    name = "trl"
    description = "TRL conversational preference format, implicit or explicit prompt"
    fmt = "trl"


class ShareGPTSource(_FormatSource):
    name = "sharegpt"
    description = "ShareGPT conversations (from/value), optionally with chosen/rejected answers"
    fmt = "sharegpt"


class JsonlSource(_FormatSource):
    name = "jsonl"
    description = "plain conversations: {id, messages} per line (or any format, detected)"
    fmt = "auto"


class _CustomSource(SeedSource):
    """Sources whose records need their own parser."""

    provides = ("conversations", "pairs")
    needs_path = True
    columns: ClassVar[dict[str, tuple[str, ...]]] = {}  # what -> the columns its records need

    @classmethod
    def required_columns(cls, cfg: DataSourceConfig, what: str) -> tuple[str, ...]:
        return cls.columns.get(what, ())

    to_conversation: Callable[[dict[str, Any]], Conversation | None]
    to_pair: Callable[[dict[str, Any]], PreferencePair | None]

    def _records(self, cfg: DataSourceConfig, parse: Callable[[dict[str, Any]], Any]) -> list[Any]:
        def named(rec: Any) -> Any:
            if not isinstance(rec, dict):
                raise UnusableRecord("invalid", f"{self.name}: record is not a JSON object")
            try:
                return parse(rec)
            except KeyError as exc:
                raise UnusableRecord("missing_field", f"{self.name}: missing {exc}") from None
            except TypeError as exc:
                raise UnusableRecord("invalid", f"{self.name}: {exc}") from None

        return read_each(_need_path(cfg, self.name), named, cfg.split)

    def load_conversations(self, cfg: DataSourceConfig) -> list[Conversation]:
        return self._records(cfg, self.to_conversation)

    def load_pairs(self, cfg: DataSourceConfig) -> list[PreferencePair]:
        return self._records(cfg, self.to_pair)


class HHRLHFSource(_CustomSource):
    name = "hh-rlhf"
    description = "Anthropic HH-RLHF transcripts ('\\n\\nHuman: ... \\n\\nAssistant: ...')"
    to_conversation = staticmethod(hh_conversation)
    columns = {"conversations": ("chosen",), "pairs": ("chosen", "rejected")}
    to_pair = staticmethod(hh_pair)


class UltraInteractSource(_CustomSource):
    name = "ultrainteract"
    description = "UltraInteract SFT (instruction/response) or pair (trajectory/chosen/rejected) records"
    to_conversation = staticmethod(ui_conversation)
    columns = {"conversations": ("instruction|trajectory",), "pairs": ("trajectory", "chosen", "rejected")}
    to_pair = staticmethod(ui_pair)
