"""Spend over time, shaped alike for every backend from the rows of its running sums: per day
for the last N days and per hour for the last 48 hours, oldest first, gaps as 0."""

from __future__ import annotations

from collections.abc import Iterable

from orchestra.spend.calendar import Calendar

HOURS = 48


def first_keys(cal: Calendar, now: float, days: int) -> tuple[str, str]:
    """The first day key to read per day, and the first to read per hour."""
    return cal.days_back(now, days - 1), cal.days_back(now, HOURS // 24)


def shape(
    cal: Calendar,
    now: float,
    days: int,
    by_day: Iterable[tuple[str, float, int]],
    by_hour: Iterable[tuple[str, int, float]],
) -> dict[str, object]:
    """`by_day` is (day, cost, answers) from the first day key on; `by_hour` (day, hour, cost).
    As in the totals, spend dated after today (a clock stepped back) counts today."""
    today = cal.day(now)
    day_cost: dict[str, float] = {}
    day_answers: dict[str, int] = {}
    for day, cost, answers in by_day:
        key = min(day, today)
        day_cost[key] = day_cost.get(key, 0.0) + float(cost)
        day_answers[key] = day_answers.get(key, 0) + int(answers)
    hour_sums = {(day, int(hour)): float(cost) for day, hour, cost in by_hour}
    day_rows = []
    for n in range(days - 1, -1, -1):
        day = cal.days_back(now, n)
        day_rows.append(
            {"day": day, "cost_usd": day_cost.get(day, 0.0), "answers": day_answers.get(day, 0)}
        )
    hour_rows = []
    for n in range(HOURS - 1, -1, -1):
        day, hour = cal.day(now - 3600 * n), cal.hour(now - 3600 * n)
        hour_rows.append({"day": day, "hour": hour, "cost_usd": hour_sums.get((day, hour), 0.0)})
    return {"days": day_rows, "hours": hour_rows}
