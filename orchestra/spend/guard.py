"""The budget guard: books a paid call's worst case in the ledger before the call is made."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from orchestra.core.errors import ProviderError, StoreError
from orchestra.core.model_spec import ModelSpec
from orchestra.core.request import Request, as_sent
from orchestra.core.tier import Tier
from orchestra.spend.budget import Budget
from orchestra.spend.estimate import cost_usd, messages_tokens
from orchestra.spend.ledger import Ask, Hold, Ledger, Refusal

log = logging.getLogger("orchestra.spend")

# Below this many answer tokens a capped answer is not worth paying for: the model is refused
# instead (and a cheaper or free candidate answers).
MIN_ANSWER_TOKENS = 256
# Booked beyond the answer cap: a stream that runs past its cap is cut at the first piece that
# provably does (see `spend/settle.py`), and that piece (a few tokens) is billed.
CUT_SLACK_TOKENS = 16


@dataclass(frozen=True, kw_only=True, slots=True)
class Booking:
    """A call the guard let through: its reservation (None when nothing needed reserving) and
    the answer cap to send (the request's own `max_tokens`, or what the budget can pay for).

    `cut`: a call not streamed whose reservation covers its answer only up to that cap (a whole
    answer from a provider that ignores the cap could overrun the budget); it is to be streamed
    and cut as soon as its answer reaches the cap."""

    hold: Hold | None
    max_tokens: int | None
    prompt_tokens: int
    cut: bool = False


class BudgetGuard:
    """Reserves each paid call's worst-case cost (its prompt, estimated high, plus its answer cap)
    in the ledger, atomically against the budget and every process's reservations.

    A call with no `max_tokens` is capped at `Budget.max_tokens_per_call`, shrunk to what the
    budget has left (but never below `MIN_ANSWER_TOKENS`), and the cap is sent to the provider;
    a provider that ignores it is cut at it, or held for its longest answer (see `admit`). Free
    models and runtimes without a budget reserve nothing. A cloud model whose
    price is unknown cannot be held to a budget, so while one is set it is refused (the next
    candidate answers); a local or LAN model whose price is unknown is taken as self-hosted
    (free), with a warning.
    """

    def __init__(self, budget: Budget, ledger: Ledger | None) -> None:
        self.budget = budget
        self.ledger = ledger
        self._unpriced: set[str] = set()

    async def admit(
        self, spec: ModelSpec, request: Request, lease_s: float, *, stream: bool = False
    ) -> Booking:
        """Reserve for one call to `spec`; raises `ProviderError(kind="budget")` when it would
        overrun a budget. The prompt counted is the one sent: the model's own system prompt
        included.

        A provider may ignore the answer cap it is sent. A stream is then cut at the first piece
        past the cap (it is booked with `CUT_SLACK_TOKENS` more, for that piece). A whole answer
        arrives before it can be counted, so a call not streamed also asks for the answer its
        model could give whatever its cap (its context window). When the ledger grants that, the
        call is made as asked; when not (it would be a large share of what is left), `Booking.cut`
        says to stream it and stop as soon as its answer reaches the cap. It is booked at its cap
        alone, so that every honest call the budget covers is paid, however many run at once."""
        prompt = messages_tokens(as_sent(request.messages, spec.system_prompt))
        if spec.is_free or not self.budget.limited or self.ledger is None:
            return Booking(hold=None, max_tokens=request.max_tokens, prompt_tokens=prompt)
        cap = request.max_tokens or self.budget.max_tokens_per_call
        floor = cap if request.max_tokens else min(cap, MIN_ANSWER_TOKENS)
        # A stream is booked with room for the piece that carries it past its cap: it is cut
        # there, but that piece has arrived (and been billed) by then.
        slack = CUT_SLACK_TOKENS if stream else 0
        want, least = cost_usd(spec, prompt, cap + slack), cost_usd(spec, prompt, floor + slack)
        whole = None if stream else cost_usd(spec, prompt, max(cap, spec.context_window))
        if want is None or least is None:
            if spec.tier is Tier.CLOUD:
                raise ProviderError(
                    f"{spec.name}: no price known, so it cannot be held to the budget; set its "
                    "input_cost_per_mtok and output_cost_per_mtok (0 if it is free)",
                    kind="budget",
                    model=spec.name,
                )
            self._warn_unpriced(spec)
            return Booking(hold=None, max_tokens=request.max_tokens, prompt_tokens=prompt)
        b = self.budget
        try:
            granted = await self.ledger.reserve(
                Ask(model=spec.name, tier=spec.tier, request_id=request.id, min_usd=least,
                    want_usd=want, daily_usd=b.daily_usd, monthly_usd=b.monthly_usd,
                    lease_s=lease_s, whole_usd=whole)
            )  # fmt: skip
        except StoreError as exc:  # no ledger, no paid call: a free candidate may still answer
            raise ProviderError(
                f"{spec.name}: the budget could not be checked (the store failed: {exc})",
                kind="budget",
                model=spec.name,
            ) from exc
        if isinstance(granted, Refusal):
            raise ProviderError(
                f"{spec.name}: ${least:.6f} (its prompt and a {floor}-token answer) would overrun "
                f"the {granted.limit} budget (${max(granted.left_usd, 0.0):.6f} left)",
                kind="budget",
                model=spec.name,
            )
        affordable = _affordable(spec, prompt, cap + slack, granted.usd)
        held_whole = whole is None or granted.usd >= whole - 1e-12
        return Booking(hold=granted, max_tokens=max(1, affordable - slack), prompt_tokens=prompt,
                       cut=not held_whole)  # fmt: skip

    def release(self, booking: Booking | None) -> None:
        """Give back a reservation whose call was never billed."""
        if booking is not None and booking.hold is not None and self.ledger is not None:
            self.ledger.release(booking.hold)

    def _warn_unpriced(self, spec: ModelSpec) -> None:
        if spec.name not in self._unpriced:
            self._unpriced.add(spec.name)
            log.warning("no price known for %s (%s tier): taken as self-hosted, free",
                        spec.name, spec.tier)  # fmt: skip


def _affordable(spec: ModelSpec, prompt: int, cap: int, usd: float) -> int:
    """The answer tokens `usd` pays for on `spec` after its prompt, at most `cap`."""
    out = spec.output_cost_per_mtok or 0.0
    if out <= 0:
        return cap
    left = usd * 1e6 - prompt * (spec.input_cost_per_mtok or 0.0)
    return max(1, min(cap, math.floor(left / out + 1e-9)))
