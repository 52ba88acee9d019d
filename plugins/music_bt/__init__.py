"""Bradley-Terry reward-model trainer and reward heads (last-token, cls, mean-pool, per-turn)."""

from music_core import hookimpl

from .heads import ClsHead, LastTokenHead, MeanPoolHead, PerTurnHead
from .trainer import BradleyTerryTrainer


@hookimpl
def register_trainers(register):
    register(BradleyTerryTrainer)


@hookimpl
def register_reward_heads(register):
    register(LastTokenHead)
    register(ClsHead)
    register(MeanPoolHead)
    register(PerTurnHead)
