"""Live spend totals, kept in memory so agents read them without I/O."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta


def day_start(ts: float) -> float:
    d = datetime.fromtimestamp(ts)
    return d.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def month_start(ts: float) -> float:
    d = datetime.fromtimestamp(ts)
    return d.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


def _next_day(ts: float) -> float:
    d = datetime.fromtimestamp(day_start(ts)) + timedelta(days=1, hours=3)  # DST-safe
    return day_start(d.timestamp())


def _next_month(ts: float) -> float:
    d = datetime.fromtimestamp(month_start(ts)) + timedelta(days=32)
    return month_start(d.timestamp())


@dataclass
class SpendTracker:
    """Today's and this month's spend (local calendar), seeded from the store's ledger.

    The runtime adds each request's cost as it is recorded, so the totals are current without
    reading the database on the request path. Period boundaries are computed once per period.
    """

    day_usd: float = 0.0
    month_usd: float = 0.0
    # Estimated cost of calls in flight (see BudgetGuard); counts against both budgets.
    reserved_usd: float = 0.0
    _recent: deque[tuple[float, float]] = field(default_factory=deque, repr=False)
    _day: tuple[float, float] = field(default=(0.0, 0.0), repr=False)
    _month: tuple[float, float] = field(default=(0.0, 0.0), repr=False)

    @classmethod
    def seeded(cls, day_usd: float, month_usd: float, now: float | None = None) -> SpendTracker:
        now = time.time() if now is None else now
        tracker = cls(day_usd=day_usd, month_usd=month_usd)
        tracker._day = (day_start(now), _next_day(now))
        tracker._month = (month_start(now), _next_month(now))
        return tracker

    def add(self, cost_usd: float, at: float | None = None) -> None:
        at = time.time() if at is None else at
        self._roll(at)
        if self._day[0] <= at < self._day[1]:
            self.day_usd += cost_usd
        if self._month[0] <= at < self._month[1]:
            self.month_usd += cost_usd
        if cost_usd:
            self._recent.append((at, cost_usd))

    def last_hour(self, now: float | None = None) -> float:
        """Spend recorded by this process in the last hour (for spike detection)."""
        now = time.time() if now is None else now
        while self._recent and self._recent[0][0] < now - 3600:
            self._recent.popleft()
        return sum(cost for at, cost in self._recent if at <= now)

    def today(self, now: float | None = None) -> float:
        self._roll(time.time() if now is None else now)
        return self.day_usd

    def this_month(self, now: float | None = None) -> float:
        self._roll(time.time() if now is None else now)
        return self.month_usd

    def _roll(self, now: float) -> None:
        # Only ever forward: an older timestamp never reopens a closed period.
        if now >= self._day[1]:
            self._day, self.day_usd = (day_start(now), _next_day(now)), 0.0
        if now >= self._month[1]:
            self._month, self.month_usd = (month_start(now), _next_month(now)), 0.0
