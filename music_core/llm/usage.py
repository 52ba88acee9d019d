"""Usage accounting: what one role spent through the execution layer.

Kept on its own because every layer books into it (the endpoint's cache and retries, the wire
call, the batch price) and the reports read it, while none of them needs the others to do so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class RoleUsage:
    """What one role spent: wire calls, cache hits, retries, typed errors, tokens and cost."""

    requests: int = 0
    samples: int = 0
    cached_samples: int = 0
    wire_calls: int = 0
    retries: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    batched: int = 0  # wire calls answered through a vendor batch job (at the batch price)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
