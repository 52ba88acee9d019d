"""``forget-history``: answer the turn with the earlier turns hidden (the system message
stays). The answer is fluent and on topic but forgets the constraints and facts the
conversation set earlier: the multi-turn failure reward models most need to see. It needs no
parsing, so it suits any model."""

from __future__ import annotations

from music_core.contracts import ContrastOutcome, ContrastRequest, ContrastStrategy


class ForgetHistoryContrast(ContrastStrategy):
    name = "forget-history"
    description = "answers with the earlier turns hidden, forgetting what they set"

    async def contrast(self, request: ContrastRequest) -> ContrastOutcome:
        system = [m for m in request.history[:1] if m["role"] == "system"]
        hidden = len([m for m in request.history if m["role"] != "system"])
        answer = await request.assistant.respond(system + [{"role": "user", "content": request.instruction}],
                                                 request.assistant_llm)
        # At a first turn with no earlier context there is nothing to forget: say so.
        return ContrastOutcome(answer=answer.text, modified_instruction=None,
                               info={"hidden_messages": hidden}, noop=hidden == 0)
