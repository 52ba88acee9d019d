"""The packed-scorer protocol: a reward scorer that also takes token ids.

``music serve`` batches requests from many clients into one forward pass, so it cannot hand whole
conversations to :meth:`RewardScorer.score`: it encodes each request as it arrives (with the
training's chat template and truncation), queues the ids, and scores the queue under a token
budget. A scorer that implements this protocol can be served and inspected whichever trainer made
it; the bundled Bradley-Terry scorer is one implementation, a third-party trainer's scorer is
another (see ``docs/hooks.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class EncodedConversation:
    """A conversation as the model will read it: its token ids after truncation, whether anything
    was cut, and whether the whole first exchange was dropped (a defect there cannot be seen)."""

    ids: list[int]
    truncated: bool = False
    first_turn_cut: bool = False


@runtime_checkable
class PackedScorer(Protocol):
    """Encode, score ids, and a token budget per forward pass.

    - ``max_length``: the most tokens one sequence keeps (the training's ``max_length``).
    - ``tokens_per_batch``: the token budget of one scoring batch; a server sets it from its own
      limit, so it must be assignable.
    - ``encode``: a conversation (role/content messages) to ids exactly as training encoded it.
    - ``tokenize``: already-templated text (vLLM's and OpenRLHF's queries) to ids, uncut.
    - ``score_ids``: one reward per id sequence, in order.
    """

    tokens_per_batch: int

    @property
    def max_length(self) -> int: ...

    def encode(self, conversation: Sequence[Any]) -> EncodedConversation: ...

    def tokenize(self, text: str) -> list[int]: ...

    def score_ids(self, encoded: list[list[int]]) -> list[float]: ...
