"""Budget reservations while the shared database is unreachable, decided in one process."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from orchestra.spend.ledger import Ask, Hold, Refusal, SpendTotals
from orchestra.store.ledger_rules import grant
from orchestra.store.postgres_writer import Payload, charge_of


@dataclass
class OfflineLedger:
    """Reservations while the database is unreachable, decided in this process.

    What the budget counts: the shared totals last read (`known`: spend and live reservations
    of every host) plus what this process has spent and holds since. What a process may spend:
    its share of what was left, `(limit - known spend - known reservations) / clients`, where
    `clients` is how many processes were seen sharing the database in the last minute; so all
    of them cut off at once still spend at most what was left. Never having read the totals
    (started during an outage with no spill file), it refuses every paid call.
    """

    known: SpendTotals | None
    clients: int
    since: float = field(default_factory=time.time)
    spent: float = 0.0
    held: dict[int, float] = field(default_factory=dict)
    next_id: int = -1  # local holds have negative ids: nothing to settle in the database

    def reserve(self, ask: Ask) -> Hold | Refusal:
        k = self.known
        if k is None:
            return Refusal(limit="daily" if ask.daily_usd is not None else "monthly", left_usd=0.0)
        n = max(1, self.clients)

        def share(limit: float | None, spent: float) -> float | None:
            return None if limit is None else (limit - spent - k.reserved_usd) / n

        scaled = replace(
            ask,
            daily_usd=share(ask.daily_usd, k.today_usd),
            monthly_usd=share(ask.monthly_usd, k.month_usd),
        )
        mine = SpendTotals(today_usd=self.spent, month_usd=self.spent)
        got = grant(scaled, mine, sum(self.held.values()))
        if isinstance(got, Refusal):
            return got
        hold_id, self.next_id = self.next_id, self.next_id - 1
        self.held[hold_id] = got
        return Hold(id=hold_id, usd=got)

    def settled(self, payloads: Sequence[Payload]) -> None:
        """Spilled writes: their charges count as spent, their holds are settled."""
        for p in payloads:
            for item in p.get("charges", ()):
                _, c, _ = charge_of(item)
                self.spent += c.cost_usd
                if c.hold_id is not None:
                    self.held.pop(c.hold_id, None)
            for hold_id in p.get("releases", ()):
                self.held.pop(hold_id, None)

    def totals(self, now: float) -> SpendTotals:
        k = self.known or SpendTotals(at=now)
        return SpendTotals(
            today_usd=k.today_usd + self.spent,
            month_usd=k.month_usd + self.spent,
            reserved_usd=k.reserved_usd + sum(self.held.values()),
            last_hour_usd=k.last_hour_usd + self.spent,
            at=now,
        )
