"""``python -m music_core`` (and ``accelerate launch -m music_core ...``)."""

from .cli import main

main()
