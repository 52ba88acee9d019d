"""music: multi-turn reward models with MUSIC (MUlti-Step Instruction Contrast).

Plugin authors need only ``from music_core import hookimpl`` and the contracts in
:mod:`music_core.contracts`.
"""

from .hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["__version__", "hookimpl"]
