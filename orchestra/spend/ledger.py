"""The ledger: the truth about spend, shared by every process (and host) using one store.

Before a paid call, `reserve` books its worst-case cost against the budget in one transaction,
counting the committed spend and every live reservation of every process; a reservation has a
lease, so one left by a killed process stops counting when it expires (it is then charged at its
amount: the provider may have billed the call). After the call, its record carries `Charge`s
(the real cost) that replace the reservation in the same transaction. Totals are sums over the
ledger's rows (by their timestamps), never a counter that could freeze.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from orchestra.core.tier import Tier

if TYPE_CHECKING:
    from orchestra.spend.tracker import SpendTracker

ChargeKind = Literal["answer", "partial", "lost"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Ask:
    """A reservation asked for: between `min_usd` and `want_usd` for one call to `model`.

    The ledger grants as much of `want_usd` as every limit allows, and refuses when even
    `min_usd` does not fit. `whole_usd`, when set, is what the call would cost if the provider
    ignored the answer cap it is sent (the longest answer the model can give): it is granted
    instead when it is a small share of what is left (`orchestra.store.ledger_rules.grant`).
    `lease_s` is how long the reservation may live unsettled.
    """

    model: str
    tier: Tier
    request_id: str
    min_usd: float
    want_usd: float
    daily_usd: float | None
    monthly_usd: float | None
    lease_s: float
    whole_usd: float | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Hold:
    """A granted reservation: `usd` of the budget is held for one call until it is settled."""

    id: int
    usd: float


@dataclass(frozen=True, kw_only=True, slots=True)
class Refusal:
    """A reservation the budget cannot cover: which limit, and how much is left of it."""

    limit: str  # "daily" | "monthly"
    left_usd: float


@dataclass(frozen=True, kw_only=True, slots=True)
class Charge:
    """What one call cost, as it goes to the ledger: `answer` for the answering call, `partial`
    for a call billed for what it sent before it broke or was abandoned."""

    model: str
    tier: Tier
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    kind: ChargeKind = "answer"
    hold_id: int | None = None
    usage_reported: bool = True  # False: the tokens were counted here, not by the provider
    at: float | None = None  # when it was billed (None: when it is written)


@dataclass(frozen=True, kw_only=True, slots=True)
class SpendTotals:
    """Spend as the ledger had it at `at`: today, this month, in flight, the last hour (USD)."""

    today_usd: float = 0.0
    month_usd: float = 0.0
    reserved_usd: float = 0.0
    last_hour_usd: float = 0.0
    at: float = field(default_factory=time.time)


class Ledger(ABC):
    """Reservations and totals over the store's ledger (the store implements it)."""

    @abstractmethod
    async def reserve(self, ask: Ask) -> Hold | Refusal:
        """Book `ask` atomically against the budget, across every process sharing the store."""

    @abstractmethod
    def release(self, hold: Hold) -> None:
        """Drop a reservation whose call was never billed (refused, failed before an answer)."""

    @property
    @abstractmethod
    def spend(self) -> SpendTracker:
        """The latest totals, kept current by the ledger (read without I/O)."""
