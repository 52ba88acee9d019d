"""The paper's Algorithm 1: two branches from one seed.

- chosen:   u_t -> a_t = M_a(history + u_t); the user simulator writes u_{t+1} from the
            chosen history.
- rejected: the contrast strategy answers u_t (by answering a modified u'_t, or by other
            means); the branch stores the original u_t with that answer, u'_t only in
            provenance; the user simulator writes u_{t+1} from the rejected branch's own
            history. Contrast at every turn (from ``contrast_from_turn``).
- T turns; stop early on the user simulator's end token or the context budget.
The two branches' calls at each step run concurrently, so batched providers see both.

Failures have three fates (see :mod:`music_core.llm.errors`): a transient LLM error (retries
exhausted) and an endpoint's fatal error propagate out of :meth:`RolloutEngine.run`, so that the
runner leaves the pair undone for the next run or stops the run; only content failures (a
contrast that cannot be made, a simulator that never gives a usable turn, an invalid pair)
become a final :class:`RolloutResult` with its reason.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

from ..contracts import (
    AssistantSimulator,
    ContrastError,
    ContrastOutcome,
    ContrastRequest,
    ContrastStrategy,
    UserSimulator,
)
from ..data import Message, PreferencePair
from ..llm.errors import EndpointFatalError, LLMError
from ..llm.types import Completion
from .seeds import Seed
from .text import normalize


def is_transient(exc: BaseException) -> bool:
    """An error the next run should retry (never recorded as a finished failure)."""
    return isinstance(exc, LLMError) and exc.retryable and not isinstance(exc, EndpointFatalError)


def must_propagate(exc: BaseException) -> bool:
    return isinstance(exc, EndpointFatalError) or is_transient(exc) or not isinstance(exc, Exception)


async def both(a: Any, b: Any) -> tuple[Any, Any]:
    """Await two steps; wait for both even when one fails (no orphaned calls), then raise the
    most serious failure: an endpoint's fatal error, then a transient one, then the first."""
    ra: Any
    rb: Any
    ra, rb = await asyncio.gather(a, b, return_exceptions=True)
    errors = [r for r in (ra, rb) if isinstance(r, BaseException)]
    if errors:
        errors.sort(key=lambda e: 0 if isinstance(e, EndpointFatalError) else 1 if must_propagate(e) else 2)
        raise errors[0]
    return ra, rb


@dataclass
class RolloutSettings:
    turns: int
    contrast_from_turn: int = 1
    shared_user_turns: bool = False
    max_context_tokens: int = 3072


@dataclass
class Tally:
    """Samples and tokens behind one rollout, whether this run paid for them or the cache had
    them: a pair's provenance must not depend on which run made it (what each run paid is in
    the synthesis report's usage table)."""

    samples: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cut_at_max_tokens: dict[str, int] = field(default_factory=dict)  # role -> samples the token cap ended

    def add(self, comps: list[Any], role: str) -> None:
        for c in comps:
            self.samples += 1
            self.prompt_tokens += c.usage.prompt_tokens
            self.completion_tokens += c.usage.completion_tokens
            if c.finish_reason == "length":  # a cut answer would teach the RM that unfinished is good (or bad)
                self.cut_at_max_tokens[role] = self.cut_at_max_tokens.get(role, 0) + 1


class TalliedClient:
    """A role client seen through one rollout, so the pair's provenance carries its usage."""

    def __init__(self, inner: Any, tally: Tally):
        self.inner, self.tally = inner, tally
        self.role, self.config = inner.role, inner.config

    @property
    def supports_logprobs(self) -> bool:
        return self.inner.supports_logprobs

    async def chat(self, messages: list[Message], *, n: int = 1, sample_index: int = 0, **kw: Any) -> list[Completion]:
        comps = await self.inner.chat(messages, n=n, sample_index=sample_index, **kw)
        self.tally.add(comps, self.role)
        return comps

    async def text(self, messages: list[Message], *, sample_index: int = 0, **kw: Any) -> str:
        return (await self.chat(messages, n=1, sample_index=sample_index, **kw))[0].text

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)


@dataclass
class RolloutResult:
    pair: PreferencePair | None
    error: str | None = None
    stop_reason: str = ""
    user_turn_attempts: list[int] = field(default_factory=list)
    user_turn_rejections: list[str] = field(default_factory=list)


class RolloutEngine:
    def __init__(self, *, user: UserSimulator, assistant: AssistantSimulator, strategy: ContrastStrategy,
                 clients: dict[str, Any], settings: RolloutSettings, provenance: dict[str, Any], seed: int,
                 fallback: ContrastStrategy | None = None):
        self.user, self.assistant, self.strategy, self.fallback = user, assistant, strategy, fallback
        self.clients = clients  # role -> RoleClient: user_simulator, assistant_simulator, contrast
        self.settings = settings
        self.provenance = provenance
        self.seed = seed

    async def _contrast(self, req: ContrastRequest, chosen_step: Any) -> tuple[Any, ContrastOutcome, str, str | None]:
        """The chosen answer, the rejected outcome, the strategy that made it, and why the main
        strategy gave up when a fallback made it (None otherwise). A fallback may never hand
        back the chosen answer as the rejected one."""
        try:
            a_chosen, outcome = await both(chosen_step, self.strategy.contrast(req))
            return a_chosen, outcome, self.strategy.name, None
        except ContrastError as exc:
            if self.fallback is None:
                raise
            reason = str(exc)
        a_chosen = chosen_step.result()  # a finished task: both() waited for it
        outcome = await self.fallback.contrast(req)
        if outcome.noop or normalize(outcome.answer) == normalize(a_chosen.text):
            raise ContrastError(f"fallback {self.fallback.name} gave the chosen answer again "
                                f"(after: {reason[:200]})")
        return a_chosen, outcome, self.fallback.name, reason[:300]

    def _tokens(self, msgs: list[Message], client: Any) -> int:
        return sum(client.count_tokens(m["content"]) + 4 for m in msgs)

    async def run(self, seed: Seed, pair_id: str) -> RolloutResult:
        s = self.settings
        tally = Tally()
        user_llm = TalliedClient(self.clients["user_simulator"], tally)
        asst_llm = TalliedClient(self.clients["assistant_simulator"], tally)
        rewrite_llm = TalliedClient(self.clients["contrast"], tally)
        rng = random.Random(f"{self.seed}:{pair_id}")
        u1: Message = {"role": "user", "content": seed.first_user_turn}
        chosen: list[Message] = list(seed.context) + [u1]
        rejected: list[Message] = list(seed.context) + [u1]
        turns: list[dict[str, Any]] = []
        attempts: list[int] = []
        rejections: list[str] = []  # why user-simulator samples were refused, one reason each
        stop_reason = "turns"
        failed_attempts = 0  # samples the user simulator drew for a turn it then gave up on
        for t in range(1, s.turns + 1):
            contrast = t >= s.contrast_from_turn
            original = rejected[-1]["content"]
            chosen_step = asyncio.ensure_future(self.assistant.respond(chosen, asst_llm))
            try:
                if contrast:
                    req = ContrastRequest(history=rejected[:-1], instruction=original, turn=t, assistant=self.assistant,
                                          assistant_llm=asst_llm, rewrite_llm=rewrite_llm, rng=rng)
                    a_chosen, outcome, made_by, fell_back = await self._contrast(req, chosen_step)
                    a_rejected, modified = outcome.answer, outcome.modified_instruction
                else:
                    a_chosen, plain = await both(chosen_step, self.assistant.respond(rejected, asst_llm))
                    a_rejected, modified, made_by, fell_back = plain.text, None, None, None
                    outcome = ContrastOutcome(plain.text, None)
            except Exception as exc:
                if must_propagate(exc):
                    raise  # transient or the endpoint's: the runner decides, this is no result
                # a strategy or simulator gave up on this content: a final error row, never a pair
                return RolloutResult(None, f"turn {t}: {type(exc).__name__}: {exc}", "error", attempts, rejections)
            chosen.append({"role": "assistant", "content": a_chosen.text})
            rejected.append({"role": "assistant", "content": a_rejected})
            turns.append({"turn": t, "original": original, "modified": modified, "contrasted": contrast,
                          "strategy": made_by, "strategy_attempts": outcome.attempts, "noop": outcome.noop,
                          "fallback_reason": fell_back,
                          "chosen_user": chosen[-2]["content"] if chosen[-2]["content"] != original else None,
                          "strategy_info": outcome.info})
            if t == s.turns:
                break
            budget = s.max_context_tokens
            if max(self._tokens(chosen, asst_llm), self._tokens(rejected, asst_llm)) >= budget:
                stop_reason = "context_budget"
                break
            try:
                if s.shared_user_turns:
                    nxt = await self.user.next_turn(chosen, user_llm)
                    nxt_c = nxt_r = nxt
                else:
                    nxt_c, nxt_r = await both(self.user.next_turn(chosen, user_llm),
                                              self.user.next_turn(rejected, user_llm))
            except Exception as exc:
                if must_propagate(exc):
                    raise
                # The turns so far still make a valid pair; a user simulator that cannot give a
                # usable turn ends the conversation early, as the end token would.
                reasons = list(getattr(exc, "reasons", []))
                rejections += reasons
                failed_attempts = max(1, len(reasons))  # one reason per refused sample
                stop_reason = f"user_simulator_failed: {type(exc).__name__}"
                break
            attempts += [nxt_c.attempts] + ([] if s.shared_user_turns else [nxt_r.attempts])
            for nxt in ([nxt_c] if s.shared_user_turns else [nxt_c, nxt_r]):
                rejections += list(nxt.info.get("rejected", []))
            if nxt_c.ended or nxt_r.ended:
                stop_reason = "end_token"
                break
            chosen.append({"role": "user", "content": nxt_c.text})
            rejected.append({"role": "user", "content": nxt_r.text})
        if chosen == rejected:
            return RolloutResult(None, "chosen and rejected came out identical", "identical", attempts, rejections)
        made = [t["strategy"] for t in turns if t["contrasted"]]
        fallback_turns = sum(1 for t in turns if t["fallback_reason"] is not None)
        meta = {
            **self.provenance,
            "seed_id": seed.id, "seed_conversation": seed.conversation_id, "seed_source": seed.source,
            "seed_group": seed.group,
            "context_turns": seed.context_turns, "prefix_messages": len(seed.context) + 1,
            "num_turns": len(turns), "stop_reason": stop_reason, "turns": turns, "user_turn_attempts": attempts,
            "user_turn_rejections": rejections, "user_turn_failed_attempts": failed_attempts,
            "turn_strategies": made, "fallback_turns": fallback_turns,
            "made_by_fallback": "none" if not fallback_turns else "wholly" if fallback_turns == len(made) else "partly",
            "usage": {"samples": tally.samples, "prompt_tokens": tally.prompt_tokens,
                      "completion_tokens": tally.completion_tokens, "cut_at_max_tokens": dict(tally.cut_at_max_tokens)},
        }
        pair = PreferencePair(id=pair_id, chosen=chosen, rejected=rejected, source="music", meta=meta)
        errs = pair.errors()
        if errs:
            return RolloutResult(None, "invalid pair: " + "; ".join(errs), "invalid", attempts, rejections)
        return RolloutResult(pair, None, stop_reason, attempts, rejections)
