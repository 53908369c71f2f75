"""The budget's calendar: which day and month a moment belongs to, in one time zone."""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo


class Calendar:
    """Days ('2026-11-29'), hours and months of a time zone (None: the machine's local time).

    Keys are strings that sort in time order, so a day's or a month's spend is a range of keys.
    """

    def __init__(self, timezone: str | None = None) -> None:
        self.timezone = timezone
        self._tz: tzinfo | None = ZoneInfo(timezone) if timezone else None

    def _at(self, ts: float) -> datetime:
        return datetime.fromtimestamp(ts, self._tz)

    def day(self, ts: float) -> str:
        return self._at(ts).strftime("%Y-%m-%d")

    def hour(self, ts: float) -> int:
        return self._at(ts).hour

    def month_first(self, ts: float) -> str:
        """The key of the first day of `ts`'s month."""
        return self._at(ts).strftime("%Y-%m-01")

    def day_start(self, ts: float) -> float:
        return self._at(ts).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()

    def month_start(self, ts: float) -> float:
        d = self._at(ts).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        return d.timestamp()

    def days_back(self, ts: float, n: int) -> str:
        """The key of the day `n` calendar days before `ts`'s."""
        return (self._at(ts).date() - timedelta(days=n)).isoformat()

    def previous_hour(self, ts: float) -> tuple[str, int]:
        """(day, hour) of the hour before `ts`'s."""
        before = self._at(ts) - timedelta(hours=1)
        return before.strftime("%Y-%m-%d"), before.hour


@lru_cache(maxsize=32)
def same_days(a: str, b: str) -> bool:
    """Whether two zones count the same days: the same UTC offset every 12 hours from 2015 to
    2045. So an alias ("UTC" and "Etc/UTC", "Asia/Calcutta" and "Asia/Kolkata"), or a zone under
    the same rules, is the same budget calendar."""
    if a == b:
        return True
    za, zb = ZoneInfo(a), ZoneInfo(b)
    t = datetime(2015, 1, 1, tzinfo=ZoneInfo("UTC"))
    for _ in range(30 * 366 * 2):
        if t.astimezone(za).utcoffset() != t.astimezone(zb).utcoffset():
            return False
        t += timedelta(hours=12)
    return True


@lru_cache(maxsize=8)
def calendar(timezone: str | None = None) -> Calendar:
    return Calendar(timezone)


def day_start(ts: float) -> float:
    """Start of `ts`'s day, local time."""
    return calendar().day_start(ts)


def month_start(ts: float) -> float:
    """Start of `ts`'s month, local time."""
    return calendar().month_start(ts)
