"""The ledger's statements on PostgreSQL: the same semantics as `sqlite_ledger`, across hosts.

A reservation is one short transaction: `pg_advisory_xact_lock(BUDGET_LOCK)` (reservers of every
host queue on it), then ONE statement reads the committed spend and every live reservation (one
snapshot, so a settlement committing meanwhile is seen whole or not at all), then the grants are
inserted. Settlements and charges need no lock: each replaces a reservation by at most its
amount, or a dead host's expired reservation by a "lost" charge of the same amount, so they
never make room a reserver could over-book.

Running sums (`spend_day`, `spend_hour`) move in the same transactions as the ledger rows; a
batch's deltas are added up first and applied in key order, so that two hosts' batches never
deadlock on them.

Holds granted while the database was unreachable (negative ids, kept in a host's spill file)
become reservations here when it is back (`carry`); their calls settle them by their offline
ids, which `offline_carried` translates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from orchestra.spend.calendar import Calendar
from orchestra.spend.ledger import Ask, Charge, Hold, Refusal, SpendTotals
from orchestra.store.ledger_rules import charge_row, grant_in_turn, lost_row, spend_totals
from orchestra.store.ledger_rules import summary as summary_of
from orchestra.store.postgres_db import BUDGET_LOCK, Conn
from orchestra.store.series import first_keys, shape

_INSERT_LEDGER = (
    "INSERT INTO ledger (at, request_id, model, tier, prompt_tokens, completion_tokens,"
    " cost_usd, kind, reservation_id, estimated) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
)
_ADD_DAY = (
    "INSERT INTO spend_day (day, model, tier, answers, prompt_tokens, completion_tokens, cost_usd)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (day, model, tier) DO UPDATE SET"
    " answers = spend_day.answers + excluded.answers,"
    " prompt_tokens = spend_day.prompt_tokens + excluded.prompt_tokens,"
    " completion_tokens = spend_day.completion_tokens + excluded.completion_tokens,"
    " cost_usd = spend_day.cost_usd + excluded.cost_usd"
)
_ADD_HOUR = (
    "INSERT INTO spend_hour (day, hour, cost_usd) VALUES ($1, $2, $3)"
    " ON CONFLICT (day, hour) DO UPDATE SET cost_usd = spend_hour.cost_usd + excluded.cost_usd"
)
_TOTALS = """
SELECT
    (SELECT COALESCE(SUM(cost_usd), 0) FROM spend_day WHERE day >= $1),
    (SELECT COALESCE(SUM(cost_usd), 0) FROM spend_day WHERE day >= $2),
    (SELECT COALESCE(SUM(usd), 0) FROM reservations WHERE expires_at > $3),
    (SELECT COALESCE(SUM(cost_usd), 0) FROM spend_hour
        WHERE day > $4 OR (day = $4 AND hour >= $5))
"""


# A hold granted offline, as its host's spill file keeps it: its id there (> 0; the call knows
# it negated), request id, model, tier, amount, and when its lease runs out.
OfflineHold = tuple[int, str | None, str, str, float, float]


def carried_key(host: str, hold_id: int) -> str:
    """How the database names the offline hold `hold_id` (> 0) of `host` (its spill file)."""
    return f"{host}:{hold_id}"


@dataclass
class Sums:
    """Running-sum deltas of one transaction, applied together in key order."""

    cal: Calendar
    day: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)
    hour: dict[tuple[str, int], float] = field(default_factory=dict)

    def add(
        self, at: float, model: str, tier: str, answers: int, pt: int, ct: int, cost: float
    ) -> None:
        d = self.cal.day(at)
        row = self.day.setdefault((d, model, tier), [0, 0, 0, 0.0])
        for i, x in enumerate((answers, pt, ct, cost)):
            row[i] += x
        key = (d, self.cal.hour(at))
        self.hour[key] = self.hour.get(key, 0.0) + cost

    async def apply(self, conn: Conn) -> None:
        if self.day:
            await conn.executemany(
                _ADD_DAY,
                [(d, m, t, int(a), int(p), int(c), float(usd))
                 for (d, m, t), (a, p, c, usd) in sorted(self.day.items())],
            )  # fmt: skip
        if self.hour:
            await conn.executemany(
                _ADD_HOUR, [(d, h, usd) for (d, h), usd in sorted(self.hour.items())]
            )


async def _settle(conn: Conn, hold_ids: Iterable[int], sums: Sums) -> None:
    """Remove reservations; one whose lease ran out first was charged as lost: take that charge
    back (the call's real outcome replaces the guess). Negative ids were held locally while the
    database was unreachable: there is nothing to settle here."""
    ids = sorted({h for h in hold_ids if h > 0})
    if not ids:
        return
    gone = await conn.fetch(
        "DELETE FROM reservations WHERE id = ANY($1::bigint[]) RETURNING id", ids
    )
    missing = sorted(set(ids) - {r[0] for r in gone})
    if not missing:
        return
    for at, model, tier, cost in await conn.fetch(
        "DELETE FROM ledger WHERE reservation_id = ANY($1::bigint[]) AND kind = 'lost'"
        " RETURNING at, model, tier, cost_usd",
        missing,
    ):
        sums.add(at, model, tier, 0, 0, 0, -cost)


async def _carried(conn: Conn, host: str | None, hold_ids: Iterable[int]) -> dict[int, int]:
    """The reservations that holds granted offline by `host` became (see `carry`): offline id
    (< 0) -> reservation id. An offline hold not carried has none: nothing to settle here."""
    keys = {carried_key(host, -h): h for h in hold_ids if h < 0} if host else {}
    if not keys:
        return {}
    found = await conn.fetch(
        "SELECT key, reservation_id FROM offline_carried WHERE key = ANY($1::text[])", list(keys)
    )
    return {keys[key]: reservation for key, reservation in found}


async def write_charges(
    conn: Conn,
    cal: Calendar,
    charges: Sequence[tuple[str | None, Charge, float]],
    releases: Sequence[int] = (),
    host: str | None = None,
) -> None:
    """Settle the reservations the charges were made under (and the released ones), write the
    ledger rows and move the running sums. A charge of nothing (a free model's answer) is only
    counted in the sums: no ledger row. `host`: whose spill file granted the negative (offline)
    hold ids, some of which may have been carried here since."""
    held = [*(c.hold_id for _, c, _ in charges if c.hold_id), *releases]
    carried = await _carried(conn, host, held)
    sums = Sums(cal)
    await _settle(conn, [carried.get(h, h) for h in held], sums)
    rows = []
    for request_id, c, at in charges:
        hold = carried.get(c.hold_id, c.hold_id) if c.hold_id is not None else None
        hold = hold if hold is not None and hold > 0 else None
        if c.cost_usd or hold is not None:
            rows.append(charge_row(at, request_id, c, hold))
        sums.add(at, c.model, str(c.tier), int(c.kind == "answer"), c.prompt_tokens,
                 c.completion_tokens, float(c.cost_usd))  # fmt: skip
    if rows:
        await conn.executemany(_INSERT_LEDGER, rows)
    await sums.apply(conn)


async def expire(conn: Conn, cal: Calendar, now: float) -> int:
    """Charge every reservation whose lease ran out at its full amount (its process died, or
    lost the database for longer than the lease; the provider may have billed the call).
    `DELETE ... RETURNING`: a reservation two hosts expire at once is charged once."""
    rows = await conn.fetch(
        "DELETE FROM reservations WHERE expires_at <= $1"
        " RETURNING id, request_id, model, tier, usd",
        now,
    )
    if not rows:
        return 0
    sums = Sums(cal)
    await conn.executemany(
        _INSERT_LEDGER,
        [lost_row(now, rid, model, tier, usd, hid) for hid, rid, model, tier, usd in rows],
    )
    for _, _, model, tier, usd in rows:
        sums.add(now, model, tier, 0, 0, 0, usd)
    await sums.apply(conn)
    return len(rows)


async def carry(
    conn: Conn, host: str, holds: Sequence[OfflineHold], owner: str, now: float
) -> None:
    """Make the holds `host` granted while the database was unreachable its reservations: their
    calls may still run, and every host's reservations must count them (a dead process's run
    out here and are charged as lost, once). Under the budget's lock, so that no reservation
    decided meanwhile misses them; a hold carried already (a carry whose answer was lost) is
    not carried twice."""
    keys = [carried_key(host, h[0]) for h in holds]
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", BUDGET_LOCK)
        done = {
            r[0]
            for r in await conn.fetch(
                "SELECT key FROM offline_carried WHERE key = ANY($1::text[])", keys
            )
        }
        todo = [(key, h) for key, h in zip(keys, holds, strict=True) if key not in done]
        if not todo:
            return
        ids = await _insert_reservations(
            conn, [(rid, model, tier, usd, now, expires_at, owner)
                   for _, (_, rid, model, tier, usd, expires_at) in todo],
        )  # fmt: skip
        await conn.executemany(
            "INSERT INTO offline_carried (key, reservation_id, at) VALUES ($1, $2, $3)",
            [(key, i, now) for i, (key, _) in zip(ids, todo, strict=True)],
        )


async def totals(conn: Conn, cal: Calendar, now: float) -> SpendTotals:
    """Today, this month, live reservations and the last hour, read in one statement."""
    before_day, before_hour = cal.previous_hour(now)
    row = await conn.fetchrow(
        _TOTALS, cal.day(now), cal.month_first(now), now, before_day, before_hour
    )
    assert row is not None
    today, month, reserved, hour = row
    return spend_totals(today, month, reserved, hour, now)


async def reserve(
    conn: Conn,
    cal: Calendar,
    asks: Sequence[Ask],
    owner: str,
    now: float,
    releases: Sequence[int] = (),
    undo: Sequence[float] = (),
    host: str | None = None,
) -> tuple[list[Hold | Refusal], SpendTotals | None]:
    """Drop `releases`, then grant or refuse each ask in turn, each seeing the reservations
    granted before it, in one transaction serialised with every other host's reservations.
    Returns the decisions, and the totals they were made against with the grants in them (as
    of `now`: read under the lock, they hold every grant before; None without asks).

    `undo`: the `now` of this owner's earlier reservation transactions whose outcome was never
    heard (their commit may have happened): what they granted no call holds; it is taken back
    first. `now` names this transaction's grants the same way (with `owner`), so it must differ
    from every other transaction of the owner. `host`: see `write_charges`."""
    async with conn.transaction():
        if undo:
            await conn.execute(
                "DELETE FROM reservations WHERE owner = $1 AND created_at = ANY($2::float8[])",
                owner,
                list(undo),
            )
        if releases:
            await write_charges(conn, cal, (), releases, host)
        if not asks:
            return [], None
        await conn.execute("SELECT pg_advisory_xact_lock($1)", BUDGET_LOCK)
        await expire(conn, cal, now)
        t = await totals(conn, cal, now)  # after the lock: its snapshot sees every grant before
        decided = grant_in_turn(asks, t)
        granted = [(ask, usd) for ask, usd in zip(asks, decided, strict=True)
                   if not isinstance(usd, Refusal)]  # fmt: skip
        ids: list[int] = []
        if len(granted) == 1:  # the usual case: one round trip
            ((a, usd),) = granted
            ids = [await conn.fetchval(
                "INSERT INTO reservations (request_id, model, tier, usd, created_at, expires_at,"
                " owner) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                a.request_id, a.model, str(a.tier), usd, now, now + a.lease_s, owner,
            )]  # fmt: skip
        elif granted:
            ids = await _insert_reservations(
                conn, [(a.request_id, a.model, str(a.tier), usd, now, now + a.lease_s, owner)
                       for a, usd in granted],
            )  # fmt: skip
    out: list[Hold | Refusal] = []
    it = iter(ids)
    for got in decided:
        out.append(got if isinstance(got, Refusal) else Hold(id=next(it), usd=got))
    return out, replace(t, reserved_usd=t.reserved_usd + sum(usd for _, usd in granted))


async def _insert_reservations(conn: Conn, rows: Sequence[tuple[Any, ...]]) -> list[int]:
    """Insert reservations (request id, model, tier, usd, created at, expires at, owner); their
    ids, in order: taken first, so that each hold knows its own."""
    ids = [r[0] for r in await conn.fetch(
        "SELECT nextval(pg_get_serial_sequence('reservations', 'id'))"
        " FROM generate_series(1, $1)", len(rows)
    )]  # fmt: skip
    await conn.executemany(
        "INSERT INTO reservations (id, request_id, model, tier, usd, created_at, expires_at,"
        " owner) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        [(i, *row) for i, row in zip(ids, rows, strict=True)],
    )
    return ids


async def summary(conn: Conn, cal: Calendar, now: float) -> dict[str, Any]:
    """What `orchestra spend` shows: today, this month, all time, this month by model."""
    t = await totals(conn, cal, now)
    total, answered = await conn.fetchrow(
        "SELECT COALESCE(SUM(cost_usd), 0), COALESCE(SUM(answers), 0) FROM spend_day"
    ) or (0, 0)
    by_model = await conn.fetch(
        "SELECT model, tier, SUM(answers), SUM(prompt_tokens), SUM(completion_tokens),"
        " SUM(cost_usd) FROM spend_day WHERE day >= $1 GROUP BY model, tier"
        " ORDER BY 6 DESC, 1",
        cal.month_first(now),
    )
    return summary_of(t, total, answered, by_model)


async def series(conn: Conn, cal: Calendar, now: float, days: int) -> dict[str, object]:
    """Spend per day and per hour (see `orchestra.store.series`), from the running sums."""
    first_day, first_hour_day = first_keys(cal, now, days)
    by_day = await conn.fetch(
        "SELECT day, SUM(cost_usd), SUM(answers) FROM spend_day WHERE day >= $1 GROUP BY day",
        first_day,
    )
    by_hour = await conn.fetch(
        "SELECT day, hour, cost_usd FROM spend_hour WHERE day >= $1", first_hour_day
    )
    return shape(cal, now, days, [tuple(r) for r in by_day], [tuple(r) for r in by_hour])
