"""``drop-part``: split a multi-part instruction into its parts (sentences, list items,
"and"-joined requests), drop one (seeded), and answer what is left. The answer looks
complete but leaves out something the user asked for. Single-part instructions cannot be
contrasted this way: they raise ContrastError (see ``synth.fallback_strategy``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from music_core.contracts import ContrastError, ContrastOutcome, ContrastRequest, ContrastStrategy


@dataclass
class DropPartOptions:
    min_part_chars: int = 6


def split_parts(text: str) -> list[str]:
    """The separately answerable parts of an instruction, in order."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    items = [ln for ln in lines if re.match(r"^([-*\u2022]|\d+[.)])\s+", ln)]
    if len(items) >= 2:
        return lines
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", " ".join(lines)) if s.strip()]
    if len(sentences) >= 2:
        return sentences
    # "Do X and Y", "X, Y and Z": split the last sentence's coordinated requests
    clauses = [c.strip() for c in re.split(r",\s*(?:and\s+)?|\s+and\s+(?:also\s+)?", sentences[0] if sentences else text) if c.strip()]
    return clauses if len(clauses) >= 2 else [text.strip()]


class DropPartContrast(ContrastStrategy):
    name = "drop-part"
    options_class = DropPartOptions
    description = "answers the instruction with one of its parts silently dropped"

    async def contrast(self, request: ContrastRequest) -> ContrastOutcome:
        parts = [p for p in split_parts(request.instruction) if len(p) >= self.opts.min_part_chars]
        if len(parts) < 2:
            raise ContrastError("drop-part: the instruction has a single part")
        drop = request.rng.randrange(len(parts))
        kept = [p for i, p in enumerate(parts) if i != drop]
        modified = " ".join(kept)
        if modified[-1:] not in ".?!":
            modified += "."
        answer = await request.assistant.respond(request.history + [{"role": "user", "content": modified}],
                                                 request.assistant_llm)
        return ContrastOutcome(answer=answer.text, modified_instruction=modified,
                               info={"parts": len(parts), "dropped": parts[drop]})
