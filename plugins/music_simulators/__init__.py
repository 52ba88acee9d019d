"""User and assistant simulators for MUSIC rollouts (prompts in templates/*.yaml)."""

from music_core import hookimpl

from .assistant import DefaultAssistant
from .user import RoleFlipUser, TranscriptUser


@hookimpl
def register_simulators(register):
    register(TranscriptUser)
    register(RoleFlipUser)
    register(DefaultAssistant)
