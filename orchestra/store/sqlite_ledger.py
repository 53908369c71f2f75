"""The ledger's statements on SQLite: reservations, charges and totals, run by the store's writer
inside its write transaction (`BEGIN IMMEDIATE`: one writer at a time across every process).

Totals come from two running sums kept in the same transactions as the ledger rows: `spend_day`
(per day, model and tier) and `spend_hour` (per hour), keyed by the budget calendar's days. A
day's total counts its own rows and any dated after it: a wall clock that stepped back cannot
hide spend recorded "in the future".
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from orchestra.spend.calendar import Calendar
from orchestra.spend.ledger import Ask, Charge, Hold, Refusal, SpendTotals
from orchestra.store.ledger_rules import charge_row, grant_in_turn, lost_row, spend_totals
from orchestra.store.ledger_rules import summary as summary_of
from orchestra.store.series import first_keys, shape

_INSERT_LEDGER = (
    "INSERT INTO ledger (at, request_id, model, tier, prompt_tokens, completion_tokens,"
    " cost_usd, kind, reservation_id, estimated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_ADD_DAY = (
    "INSERT INTO spend_day (day, model, tier, answers, prompt_tokens, completion_tokens, cost_usd)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(day, model, tier) DO UPDATE SET"
    " answers = answers + excluded.answers, prompt_tokens = prompt_tokens + excluded.prompt_tokens,"
    " completion_tokens = completion_tokens + excluded.completion_tokens,"
    " cost_usd = cost_usd + excluded.cost_usd"
)
_ADD_HOUR = (
    "INSERT INTO spend_hour (day, hour, cost_usd) VALUES (?, ?, ?)"
    " ON CONFLICT(day, hour) DO UPDATE SET cost_usd = cost_usd + excluded.cost_usd"
)


@dataclass(frozen=True, slots=True)
class _Row:
    """One ledger row as the running sums see it."""

    at: float
    model: str
    tier: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    answer: bool


def _add(conn: sqlite3.Connection, cal: Calendar, row: _Row, sign: int = 1) -> None:
    day = cal.day(row.at)
    conn.execute(
        _ADD_DAY,
        (day, row.model, row.tier, sign * int(row.answer), sign * row.prompt_tokens,
         sign * row.completion_tokens, sign * row.cost_usd),
    )  # fmt: skip
    conn.execute(_ADD_HOUR, (day, cal.hour(row.at), sign * row.cost_usd))


def charge(
    conn: sqlite3.Connection, cal: Calendar, request_id: str | None, c: Charge, at: float
) -> None:
    """Write one charge to the ledger, settling the reservation it was made under. A charge of
    nothing (a free model's answer) is only counted in the running sums: no ledger row."""
    if c.hold_id is not None:
        _settle(conn, cal, c.hold_id)
    if c.cost_usd or c.hold_id is not None:
        conn.execute(_INSERT_LEDGER, charge_row(at, request_id, c, c.hold_id))
    row = _Row(at, c.model, str(c.tier), c.prompt_tokens, c.completion_tokens, c.cost_usd,
               c.kind == "answer")  # fmt: skip
    _add(conn, cal, row)


def release(conn: sqlite3.Connection, cal: Calendar, hold_id: int) -> None:
    """Drop a reservation whose call was never billed."""
    _settle(conn, cal, hold_id)


def _settle(conn: sqlite3.Connection, cal: Calendar, hold_id: int) -> None:
    """Remove a reservation; if its lease ran out first and it was charged as lost, take that
    charge back (the call's real outcome replaces the guess)."""
    if conn.execute("DELETE FROM reservations WHERE id = ?", (hold_id,)).rowcount:
        return
    lost = conn.execute(
        "SELECT id, at, model, tier, cost_usd FROM ledger"
        " WHERE reservation_id = ? AND kind = 'lost'",
        (hold_id,),
    ).fetchone()
    if lost is not None:
        rid, at, model, tier, cost = lost
        conn.execute("DELETE FROM ledger WHERE id = ?", (rid,))
        _add(conn, cal, _Row(at, model, tier, 0, 0, cost, False), sign=-1)


def expire(conn: sqlite3.Connection, cal: Calendar, now: float) -> int:
    """Charge every reservation whose lease ran out at its full amount (its process died, or
    lost track of it; the provider may have billed the call). Returns how many."""
    rows = conn.execute(
        "SELECT id, request_id, model, tier, usd FROM reservations WHERE expires_at <= ?", (now,)
    ).fetchall()
    for hold_id, request_id, model, tier, usd in rows:
        conn.execute("DELETE FROM reservations WHERE id = ?", (hold_id,))
        conn.execute(_INSERT_LEDGER, lost_row(now, request_id, model, tier, usd, hold_id))
        _add(conn, cal, _Row(now, model, tier, 0, 0, usd, False))
    return len(rows)


def totals(conn: sqlite3.Connection, cal: Calendar, now: float) -> SpendTotals:
    """Today, this month, live reservations and the last hour, from the running sums."""
    today, month = conn.execute(
        "SELECT COALESCE(SUM(CASE WHEN day >= ? THEN cost_usd END), 0),"
        " COALESCE(SUM(cost_usd), 0) FROM spend_day WHERE day >= ?",
        (cal.day(now), cal.month_first(now)),
    ).fetchone()
    (reserved,) = conn.execute(
        "SELECT COALESCE(SUM(usd), 0) FROM reservations WHERE expires_at > ?", (now,)
    ).fetchone()
    before_day, before_hour = cal.previous_hour(now)
    (hour,) = conn.execute(
        "SELECT COALESCE(SUM(cost_usd), 0) FROM spend_hour"
        " WHERE day > ? OR (day = ? AND hour >= ?)",
        (before_day, before_day, before_hour),
    ).fetchone()
    return spend_totals(today, month, reserved, hour, now)


def reserve(
    conn: sqlite3.Connection, cal: Calendar, asks: Sequence[Ask], owner: str
) -> list[Hold | Refusal]:
    """Grant or refuse each ask in turn, each seeing the reservations granted before it."""
    now = time.time()
    expire(conn, cal, now)
    t = totals(conn, cal, now)
    out: list[Hold | Refusal] = []
    for ask, usd in zip(asks, grant_in_turn(asks, t), strict=True):
        if isinstance(usd, Refusal):
            out.append(usd)
            continue
        cursor = conn.execute(
            "INSERT INTO reservations (request_id, model, tier, usd, created_at, expires_at, owner)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (ask.request_id, ask.model, str(ask.tier), usd, now, now + ask.lease_s, owner),
        )
        assert cursor.lastrowid is not None
        out.append(Hold(id=cursor.lastrowid, usd=usd))
    return out


def summary(conn: sqlite3.Connection, cal: Calendar, now: float) -> dict[str, Any]:
    """What `orchestra spend` shows: today, this month, all time, this month by model."""
    t = totals(conn, cal, now)
    total, answered = conn.execute(
        "SELECT COALESCE(SUM(cost_usd), 0), COALESCE(SUM(answers), 0) FROM spend_day"
    ).fetchone()
    by_model = conn.execute(
        "SELECT model, tier, SUM(answers), SUM(prompt_tokens), SUM(completion_tokens),"
        " SUM(cost_usd) FROM spend_day WHERE day >= ? GROUP BY model, tier"
        " ORDER BY 6 DESC, 1",
        (cal.month_first(now),),
    ).fetchall()
    return summary_of(t, total, answered, by_model)


def series(conn: sqlite3.Connection, cal: Calendar, now: float, days: int) -> dict[str, object]:
    """Spend per day and per hour (see `orchestra.store.series`): a range of the running sums'
    primary keys, as cheap on a year of history as on a day of it."""
    first_day, first_hour_day = first_keys(cal, now, days)
    by_day = conn.execute(
        "SELECT day, SUM(cost_usd), SUM(answers) FROM spend_day WHERE day >= ? GROUP BY day",
        (first_day,),
    ).fetchall()
    by_hour = conn.execute(
        "SELECT day, hour, cost_usd FROM spend_hour WHERE day >= ?", (first_hour_day,)
    ).fetchall()
    return shape(cal, now, days, by_day, by_hour)
