"""Seed sources: the built-in multi-turn set shipped here, and readers for the Skywork, TRL,
ShareGPT, Anthropic HH and UltraInteract formats and plain JSONL conversations."""

from music_core import hookimpl

from .sources import (
    BuiltinPrompts,
    BuiltinSource,
    HHRLHFSource,
    JsonlSource,
    ShareGPTSource,
    SkyworkSource,
    TRLSource,
    UltraInteractSource,
)


@hookimpl
def register_seed_sources(register):
    for source in (BuiltinSource, BuiltinPrompts, SkyworkSource, TRLSource, ShareGPTSource, JsonlSource,
                   HHRLHFSource, UltraInteractSource):
        register(source)
