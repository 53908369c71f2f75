"""Live spend totals, kept in memory so agents read them without I/O."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime


def day_key(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d")


def month_key(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m")


def day_start(ts: float) -> float:
    d = datetime.fromtimestamp(ts)
    return d.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def month_start(ts: float) -> float:
    d = datetime.fromtimestamp(ts)
    return d.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


@dataclass
class SpendTracker:
    """Today's and this month's spend (local calendar), seeded from the store's ledger.

    The runtime adds each request's cost as it is recorded, so the totals are current without
    reading the database on the request path.
    """

    day: str = ""
    month: str = ""
    day_usd: float = 0.0
    month_usd: float = 0.0

    @classmethod
    def seeded(cls, day_usd: float, month_usd: float, now: float | None = None) -> SpendTracker:
        now = time.time() if now is None else now
        return cls(day=day_key(now), month=month_key(now), day_usd=day_usd, month_usd=month_usd)

    def add(self, cost_usd: float, at: float | None = None) -> None:
        at = time.time() if at is None else at
        self._roll(at)
        if day_key(at) == self.day:
            self.day_usd += cost_usd
        if month_key(at) == self.month:
            self.month_usd += cost_usd

    def today(self, now: float | None = None) -> float:
        self._roll(time.time() if now is None else now)
        return self.day_usd

    def this_month(self, now: float | None = None) -> float:
        self._roll(time.time() if now is None else now)
        return self.month_usd

    def _roll(self, now: float) -> None:
        # Keys are ISO strings, so they order like dates; an older timestamp never rolls back.
        d, m = day_key(now), month_key(now)
        if d > self.day:
            self.day, self.day_usd = d, 0.0
        if m > self.month:
            self.month, self.month_usd = m, 0.0
