"""The seed source classes. Each loads by local path (file or folder) or hub id, and names the
file and line of a bad record."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from music_core.config.schema import DataSourceConfig
from music_core.contracts import SeedSource
from music_core.data import Conversation, PreferencePair
from music_core.errors import ConfigError, RecordError
from music_core.formats import iter_raw_records, load_conversations, load_pairs

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

    def load_pairs(self, cfg: DataSourceConfig) -> list[PreferencePair]:
        return load_pairs(str(DATA / "pairs.jsonl"), "trl", source="builtin")

    def load_conversations(self, cfg: DataSourceConfig) -> list[Conversation]:
        return [Conversation(p.id, p.chosen, "builtin", dict(p.meta)) for p in self.load_pairs(cfg)]


class BuiltinPrompts(SeedSource):
    name = "builtin-prompts"
    description = "24 opening prompts for multi-turn Best-of-N"

    def load_conversations(self, cfg: DataSourceConfig) -> list[Conversation]:
        return load_conversations(str(DATA / "prompts.jsonl"), "messages", source="builtin-prompts")


class _FormatSource(SeedSource):
    fmt = "auto"
    provides = ("conversations", "pairs")

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
    to_conversation: Callable[[dict[str, Any]], Conversation | None]
    to_pair: Callable[[dict[str, Any]], PreferencePair | None]

    def _records(self, cfg: DataSourceConfig, parse):
        out = []
        for where, line, rec in iter_raw_records(_need_path(cfg, self.name), cfg.split):
            try:
                item = parse(rec)
            except (ValueError, KeyError, TypeError) as exc:
                raise RecordError(where, line, f"{self.name}: {exc}") from None
            if item is not None:
                out.append(item)
        return out

    def load_conversations(self, cfg: DataSourceConfig) -> list[Conversation]:
        return self._records(cfg, self.to_conversation)

    def load_pairs(self, cfg: DataSourceConfig) -> list[PreferencePair]:
        return self._records(cfg, self.to_pair)


class HHRLHFSource(_CustomSource):
    name = "hh-rlhf"
    description = "Anthropic HH-RLHF transcripts ('\\n\\nHuman: ... \\n\\nAssistant: ...')"
    to_conversation = staticmethod(hh_conversation)
    to_pair = staticmethod(hh_pair)


class UltraInteractSource(_CustomSource):
    name = "ultrainteract"
    description = "UltraInteract SFT (instruction/response) or pair (trajectory/chosen/rejected) records"
    to_conversation = staticmethod(ui_conversation)
    to_pair = staticmethod(ui_pair)
