"""Live spend as agents read it: the ledger's latest totals, held in memory (no I/O to read)."""

from __future__ import annotations

import time

from orchestra.spend.calendar import Calendar, day_start, month_start
from orchestra.spend.calendar import calendar as local_calendar
from orchestra.spend.ledger import SpendTotals

__all__ = ["SpendTracker", "day_start", "month_start"]


class SpendTracker:
    """Today's and this month's spend, what is reserved in flight and the last hour's spend.

    The store refreshes it from the ledger after every commit that moves money, and every second
    for what other processes spend; agents read it on the request path without I/O. It is a
    view: the budget itself is enforced by the ledger's reservations, never by this.
    """

    __slots__ = ("_totals", "calendar")

    def __init__(self, totals: SpendTotals | None = None, calendar: Calendar | None = None) -> None:
        self._totals = totals or SpendTotals()
        self.calendar = calendar or local_calendar()  # the budget's days (default: the machine's)

    @classmethod
    def seeded(cls, day_usd: float, month_usd: float, now: float | None = None) -> SpendTracker:
        """A view holding fixed totals (tests, experiments, a runtime without a store)."""
        at = time.time() if now is None else now
        return cls(SpendTotals(today_usd=day_usd, month_usd=month_usd, at=at))

    def update(self, totals: SpendTotals) -> None:
        """Take newer totals; older ones (a slow refresh finishing late) are ignored."""
        if totals.at >= self._totals.at:
            self._totals = totals

    @property
    def totals(self) -> SpendTotals:
        return self._totals

    @property
    def reserved_usd(self) -> float:
        return self._totals.reserved_usd

    def today(self, now: float | None = None) -> float:
        if now is not None and self.calendar.day_start(now) > self._totals.at:
            return 0.0  # a new day began since these totals were read
        return self._totals.today_usd

    def this_month(self, now: float | None = None) -> float:
        if now is not None and self.calendar.month_start(now) > self._totals.at:
            return 0.0
        return self._totals.month_usd

    def last_hour(self, now: float | None = None) -> float:
        return self._totals.last_hour_usd
