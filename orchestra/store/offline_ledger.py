"""Budget reservations while the shared database is unreachable: one allowance per host, kept
in the spill file and decided there by every process of the host in turn."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from orchestra.spend.ledger import Ask, Charge, Hold, Refusal, SpendTotals
from orchestra.store.ledger_rules import grant
from orchestra.store.postgres_writer import charge_json
from orchestra.store.spill import Spill, dumps, insert, keep_known, known_of, sums


@dataclass(frozen=True, kw_only=True, slots=True)
class Join:
    """What a process brings to its host's allowance as it loses the database: the totals it
    read last (`known`, kept unless the file holds fresher ones) and how many hosts shared the
    database then, and what it reserved in the database since that read (`carried`)."""

    known: SpendTotals | None
    clients: int
    carried: float
    at: float


@dataclass
class OfflineLedger:
    """Reservations while the database is unreachable, decided in the spill file.

    What the budget counts: the shared totals last read by any process of the host (`known`:
    spend and live reservations of every host), plus what the host's processes spent since
    (the charges the spill file holds), hold offline (`offline_holds`, with a lease: the hold
    of a process killed mid-call is charged as lost when it runs out, as the database does)
    and had reserved in the database after that read (`carried`). What the host may spend: its
    share of what was left, `(limit - known spend - known reservations) / hosts`, where `hosts`
    is how many hosts (spill files) were seen sharing the database in the last minute; so all
    of them cut off at once still spend at most what was left, however many processes each
    runs. Each decision is one `BEGIN IMMEDIATE` transaction against what every process of
    the host holds and spent. Never having read the totals, the host refuses every paid call;
    so does a process once another of its host has read them since it lost the database (it is
    back: see `_decide`).
    Every method blocks (call it from a worker thread).
    """

    spill: Spill
    owner: str
    join: Join | None
    since: float  # when this process lost the database

    def reserve(
        self, asks: Sequence[Ask], releases: Sequence[int], now: float
    ) -> tuple[list[Hold | Refusal], SpendTotals]:
        """Drop `releases` (offline holds), then grant or refuse each ask in turn."""
        return self.spill.transaction(lambda db: self._decide(db, asks, releases, now))

    def totals(self, now: float) -> SpendTotals:
        return self.reserve((), (), now)[1]

    def _decide(
        self, db: sqlite3.Connection, asks: Sequence[Ask], releases: Sequence[int], now: float
    ) -> tuple[list[Hold | Refusal], SpendTotals]:
        if self.join is not None:
            _join(db, self.owner, self.join)
            self.join = None
        db.executemany("DELETE FROM offline_holds WHERE id = ?", [(-h,) for h in releases])
        # Totals read since this process lost the database: another process of the host reads
        # it again (this one will within a probe). The first back carries the host's offline
        # holds into it: one granted here now would be counted by neither side, and one run out
        # is charged there (charged here too, it would be twice).
        known = known_of(db)
        back = known is not None and float(known["at"]) > self.since
        if not back:
            _expire(db, self.owner.partition("/")[0], now)
        spent, held = _used(db)
        out: list[Hold | Refusal] = []
        for ask in asks:
            usd = _grant(ask, None if back else known, spent, held)
            if isinstance(usd, Refusal):
                out.append(usd)
                continue
            cursor = db.execute(
                "INSERT INTO offline_holds (owner, request_id, model, tier, usd, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (self.owner, ask.request_id, ask.model, str(ask.tier), usd, now + ask.lease_s),
            )
            assert cursor.lastrowid is not None
            held += usd
            out.append(Hold(id=-cursor.lastrowid, usd=usd))
        return out, _totals(known, spent, held, now)


def _join(db: sqlite3.Connection, owner: str, join: Join) -> None:
    """Keep the process's last read if fresher than the file's, and what it carries."""
    k = join.known
    if k is not None:
        keep_known(db, {**(known_of(db) or {}), "today_usd": k.today_usd,
                        "month_usd": k.month_usd, "reserved_usd": k.reserved_usd,
                        "last_hour_usd": k.last_hour_usd, "at": k.at,
                        "clients": join.clients})  # fmt: skip
    if join.carried > 0:
        db.execute(
            "INSERT INTO carried (owner, usd, at) VALUES (?, ?, ?) ON CONFLICT (owner)"
            " DO UPDATE SET usd = carried.usd + excluded.usd, at = excluded.at",
            (owner, join.carried, join.at),
        )


def _expire(db: sqlite3.Connection, host: str, now: float) -> None:
    """Offline holds whose lease ran out (their process died, or forgot them): each becomes a
    "lost" charge of its amount, an entry drained to the database like any other. It has no
    record to tell whether a drain already wrote it: its key does (the host's, and the hold's
    id, never reused in the file)."""
    rows = db.execute(
        "SELECT id, request_id, model, tier, usd FROM offline_holds WHERE expires_at <= ?", (now,)
    ).fetchall()
    for hold_id, request_id, model, tier, usd in rows:
        db.execute("DELETE FROM offline_holds WHERE id = ?", (hold_id,))
        lost = Charge(model=model, tier=tier, prompt_tokens=0, completion_tokens=0,
                      cost_usd=usd, kind="lost", usage_reported=False)  # fmt: skip
        payload = {"charges": [charge_json(request_id, lost, now)], "key": f"lost:{host}:{hold_id}"}
        insert(db, "write", dumps(payload), payload)


def _used(db: sqlite3.Connection) -> tuple[float, float]:
    """(spent: charges not in the known totals, held: offline holds and carried reservations).
    The file keeps the charges not in the known totals: keeping totals read at `at` deletes
    the entries drained before `at` (see `keep_known`); one drained since may be in them too:
    it still counts (twice at worst, never not at all). Read from the running sums."""
    _, spent = sums(db)
    (held,) = db.execute(
        "SELECT (SELECT COALESCE(SUM(usd), 0) FROM offline_holds)"
        " + (SELECT COALESCE(SUM(usd), 0) FROM carried)"
    ).fetchone()
    return float(spent), float(held)


def _grant(ask: Ask, known: dict[str, Any] | None, spent: float, held: float) -> float | Refusal:
    if known is None:
        return Refusal(limit="daily" if ask.daily_usd is not None else "monthly", left_usd=0.0)
    n = max(1, int(known.get("clients", 1)))
    reserved = float(known["reserved_usd"])

    def share(limit: float | None, key: str) -> float | None:
        return None if limit is None else (limit - float(known[key]) - reserved) / n

    scaled = replace(
        ask,
        daily_usd=share(ask.daily_usd, "today_usd"),
        monthly_usd=share(ask.monthly_usd, "month_usd"),
    )
    return grant(scaled, SpendTotals(today_usd=spent, month_usd=spent), held)


def _totals(known: dict[str, Any] | None, spent: float, held: float, at: float) -> SpendTotals:
    k = known or {}

    def of(key: str) -> float:
        return float(k.get(key, 0.0))

    return SpendTotals(
        today_usd=of("today_usd") + spent,
        month_usd=of("month_usd") + spent,
        reserved_usd=of("reserved_usd") + held,
        last_hour_usd=of("last_hour_usd") + spent,
        at=at,
    )
