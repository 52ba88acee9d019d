"""User and assistant simulators for MUSIC rollouts (prompts in templates/*.yaml)."""

from music_core import hookimpl

from .assistant import DefaultAssistant
from .user import RoleFlipUser


@hookimpl
def register_simulators(register):
    register(RoleFlipUser)
    register(DefaultAssistant)
