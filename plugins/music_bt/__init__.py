"""Bradley-Terry reward-model trainer and reward heads (last-token, cls, mean-pool, per-turn)."""

import logging

from music_core import hookimpl

from .heads import ClsHead, LastTokenHead, MeanPoolHead, PerTurnHead
from .trainer import BradleyTerryTrainer

# transformers' scheduler module imports peft, which imports bitsandbytes; on a CPU with
# AVX512-BF16 bitsandbytes then tries to fetch an optional 4-bit kernel from the Hugging Face Hub
# and, offline, warns "Failed to load CPU gemm_4bit_forward ... pip install kernels" on every run
# that trains, though its bundled kernel serves. Only its errors are worth a user's attention.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


@hookimpl
def register_trainers(register):
    register(BradleyTerryTrainer)


@hookimpl
def register_reward_heads(register):
    register(LastTokenHead)
    register(ClsHead)
    register(MeanPoolHead)
    register(PerTurnHead)
