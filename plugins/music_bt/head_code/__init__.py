"""The bundled reward heads' computations, one self-contained module per head (``torch`` only).

Training runs these functions, and an export that needs remote code ships the head's module
beside ``modeling_music_rm.py`` as ``music_head.py``, so the exported model pools exactly as
training did. Each module defines ``build(hidden_size, settings)`` and
``reward(module, hidden, spans, settings)`` (see ``music_core.contracts.RewardHead``).
"""
