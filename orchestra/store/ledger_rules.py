"""The ledger's arithmetic, the same on every backend: the grant rule, the ledger's rows, and
the totals and summary shaped from the running sums (the SQL that reads them is each
dialect's)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from orchestra.spend.ledger import Ask, Charge, Refusal, SpendTotals

# An ask's `whole_usd` is granted only while it is at most this share of what the budget has
# left: holding an answer the model could give only by ignoring its cap must never squeeze out
# calls that fit their cap (those are cut at it instead, as streams are).
WHOLE_SHARE = 0.25


def grant(ask: Ask, t: SpendTotals, held: float) -> float | Refusal:
    """What `ask` gets against totals `t` with `held` already reserved: an amount, or a refusal
    naming the tightest limit."""
    lefts = [
        (name, limit - spent - held)
        for name, limit, spent in (
            ("daily", ask.daily_usd, t.today_usd),
            ("monthly", ask.monthly_usd, t.month_usd),
        )
        if limit is not None
    ]
    tightest = min(lefts, key=lambda x: x[1]) if lefts else None
    if tightest is not None and ask.min_usd > tightest[1] + 1e-12:
        return Refusal(limit=tightest[0], left_usd=tightest[1])
    usd = ask.want_usd if tightest is None else min(ask.want_usd, tightest[1])
    whole = ask.whole_usd
    if whole is not None and (tightest is None or whole <= WHOLE_SHARE * tightest[1]):
        usd = max(usd, whole)
    return max(usd, ask.min_usd)


def grant_in_turn(asks: Sequence[Ask], t: SpendTotals) -> list[float | Refusal]:
    """Each ask granted or refused in turn, each seeing the reservations granted before it."""
    held = t.reserved_usd
    decided: list[float | Refusal] = []
    for ask in asks:
        got = grant(ask, t, held)
        if not isinstance(got, Refusal):
            held += got
        decided.append(got)
    return decided


def charge_row(at: float, request_id: str | None, c: Charge, hold: int | None) -> tuple[Any, ...]:
    """A charge's ledger row (columns at, request_id, model, tier, prompt_tokens,
    completion_tokens, cost_usd, kind, reservation_id, estimated)."""
    return (at, request_id, c.model, str(c.tier), c.prompt_tokens, c.completion_tokens,
            float(c.cost_usd), c.kind, hold, int(not c.usage_reported))  # fmt: skip


def lost_row(
    at: float, request_id: str | None, model: str, tier: str, usd: float, hold: int
) -> tuple[Any, ...]:
    """The ledger row of a reservation whose lease ran out: charged in full, as an estimate."""
    return (at, request_id, model, tier, 0, 0, usd, "lost", hold, 1)


def spend_totals(
    today: float, month: float, reserved: float, hour: float, at: float
) -> SpendTotals:
    """The totals from the sums as read (a driver's numbers, possibly not floats)."""
    return SpendTotals(
        today_usd=float(today),
        month_usd=float(month),
        reserved_usd=float(reserved),
        last_hour_usd=float(hour),
        at=at,
    )


def summary(
    t: SpendTotals, total: float, answered: int, by_model: Iterable[Iterable[Any]]
) -> dict[str, Any]:
    """What `orchestra spend` shows; `by_model` is this month's (model, tier, answers,
    prompt_tokens, completion_tokens, cost_usd), most spent first."""
    return {
        "today_usd": t.today_usd,
        "month_usd": t.month_usd,
        "reserved_usd": t.reserved_usd,
        "total_usd": float(total),
        "answered_requests": int(answered),
        "month_by_model": [
            {
                "model": m,
                "tier": tier,
                "requests": int(n),
                "prompt_tokens": int(pt),
                "completion_tokens": int(ct),
                "cost_usd": float(c),
            }
            for m, tier, n, pt, ct, c in by_model
        ],
    }
