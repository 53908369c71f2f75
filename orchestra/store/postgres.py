"""The PostgreSQL store: many hosts share one database (history, spend, breakers, cache).

Writes are queued and committed by one writer task in batches (see `PgWriter`); budget
reservations go through their own queue, decided in batches by one short locked transaction
each (see `postgres_ledger`). Reads use the pool beside them.

When the database cannot be reached the store degrades instead of failing: records go to the
spill file in ORCHESTRA_HOME (durable there, written to the database when it answers again),
and budget reservations are decided in that file against the last shared totals read, the
processes of each host sharing one allowance: the host's share of what was left (see
`OfflineLedger`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any, Self, TypeVar

import asyncpg

import orchestra.store.budget_zone as budget_zone
import orchestra.store.postgres_ledger as pg_ledger
import orchestra.store.reads as reads
import orchestra.store.shaping as shaping
from orchestra.core.errors import ConfigError, StoreError, StoreUnavailable
from orchestra.core.feedback import Judged, RequestRef
from orchestra.core.model_spec import ModelSpec
from orchestra.core.verdict import Verdict
from orchestra.execution.breaker.storage import BreakerRecord
from orchestra.execution.cache import CachedAnswer
from orchestra.spend.calendar import Calendar, calendar
from orchestra.spend.ledger import Ask, Hold, Refusal, SpendTotals
from orchestra.spend.machine_zone import machine_zone
from orchestra.spend.tracker import SpendTracker
from orchestra.store.base import ReplayBatch, Store, StoredModel, checked_part
from orchestra.store.detail import Interner, encode
from orchestra.store.ledger_rules import summary as spend_summary
from orchestra.store.offline_ledger import Join, OfflineLedger
from orchestra.store.postgres_db import (
    MODELS_LOCK,
    Conn,
    create_pool,
    migrate,
    records,
    retry_later,
    retrying,
    unreachable,
)
from orchestra.store.postgres_options import PostgresOptions, masked
from orchestra.store.postgres_writer import (
    Link,
    Payload,
    PgWrite,
    PgWriter,
    charge_json,
    charge_of,
)
from orchestra.store.record import RequestRecord, request_row, sample_row
from orchestra.store.spill import Spill
from orchestra.store.write_outcomes import granted

log = logging.getLogger("orchestra.store")
T = TypeVar("T")


class _Flush:
    """A flush marker in the reservation queue: resolved once the releases before it are in."""


_Queued = tuple[Ask | int | _Flush, "asyncio.Future[Any] | None"]

REFRESH_S = 1.0  # how often the spend view catches up with other hosts (and the link is probed)
KNOWN_EVERY_S = 5.0  # how often the last shared totals are kept in the spill file
CLIENT_WINDOW_S = 60.0  # a host seen this recently shares the budget
MONEY_CONNECTIONS = 2  # the pool's connections reads leave to the writer and the reserver

_HISTORY = (
    "SELECT id, created_at, status, model, tier, cost_usd, latency_ms, prompt_tokens,"
    " completion_tokens, features, forced_model, forced_tier, stream, error_kind, error,"
    " detail FROM requests WHERE created_at >= $1 ORDER BY created_at DESC, seq DESC LIMIT $2"
)
_JUDGED = """
SELECT r.id, r.status, r.tier, r.prompt, f.good, r.detail
FROM feedback f JOIN requests r ON r.id = f.request_id
WHERE f.id IN (SELECT MAX(id) FROM feedback GROUP BY request_id)
ORDER BY f.id
"""
# A change takes the next version of all; the advisory lock makes it unique across hosts.
_UPSERT_MODEL = (
    "INSERT INTO models (name, spec, version, updated_at)"
    " VALUES ($1, $2, (SELECT COALESCE(MAX(version), 0) + 1 FROM models), $3)"
    " ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, version = excluded.version,"
    " updated_at = excluded.updated_at RETURNING version"
)
_REPLAY_COLUMNS = (
    "seq, id, created_at, status, model, tier, cost_usd, prompt_tokens, completion_tokens,"
    " features, prompt, forced_model, forced_tier, error_kind, detail"
)


class PostgresStore(Store):
    """The store in a PostgreSQL database shared by many hosts (see the module's docstring).

    `url` is a libpq-style URL (`postgresql://user@host:5432/db`; a password is better in
    PGPASSWORD or ~/.pgpass than in the URL). `timezone` is the config's budget calendar (None:
    the store's, see `budget_zone`); once open, `calendar` is the store's.
    """

    def __init__(self, url: str, options: PostgresOptions, timezone: str | None = None) -> None:
        self.url = url
        self.options = options
        self.timezone = timezone
        self.calendar: Calendar = calendar(timezone)
        # "<host>/<process>": the database counts the hosts (spill files) sharing the budget.
        self.owner = f"?/{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._spend = SpendTracker(calendar=self.calendar)
        self._spill = Spill(options.spill_path, options.spill_max_bytes, options.spill_sync)
        self._pool: asyncpg.Pool | None = None
        self._writer: PgWriter | None = None
        self._link = Link(self._lost)
        self._interner = Interner()
        # Budget asks (with their futures) and releases (hold ids), in the order they came.
        self._asks: asyncio.Queue[_Queued | None] = asyncio.Queue()
        # Reads (history, the cache, spend, the totals refresh) share what the pool has but
        # two connections: those are the writer's and the reserver's, so that no burst of reads
        # makes the money path wait on the pool (and an acquire timed out there look like an
        # unreachable database).
        self._reads = asyncio.Semaphore(max(1, options.pool_size - MONEY_CONNECTIONS))
        self._reserver: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._offline: OfflineLedger | None = None
        self._joining: asyncio.Task[None] | None = None
        self._known: SpendTotals | None = None
        self._granted = 0.0  # reserved here since `_known` was read: not in it, yet still out
        self._known_saved = 0.0
        self._clients = 1
        self._migrated = False
        # When this store's reservation transactions began (each later than the last: with the
        # owner, they name the reservations one granted), and those whose outcome was not heard
        # (the connection died, maybe after the commit): what they granted is held by no call,
        # and is taken back by the next reservation transaction.
        self._stamp = 0.0
        self._unsure: list[float] = []
        self._zoned = False  # the store's zone is read (it is fixed for this process's life)

    def __repr__(self) -> str:
        return f"PostgresStore({masked(self.url)!r})"

    @property
    def spend(self) -> SpendTracker:
        return self._spend

    @property
    def degraded(self) -> bool:
        """True while the database is unreachable (records go to the spill file)."""
        return self._link.degraded

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> Self:
        if self._open:
            return self
        where = masked(self.url)
        try:
            self._pool = await create_pool(self.url, self.options.timeouts, self.options.pool_size)
        except (ValueError, asyncpg.PostgresError, OSError) as exc:
            raise StoreUnavailable(f"cannot open the store at {where}: {exc}") from exc
        host = await asyncio.to_thread(self._spill.host)
        self.owner = f"{host}/{self.owner.partition('/')[2]}"
        self._writer = PgWriter(
            self._pool, self.calendar, self._spill, self._link, self._spend.update, self._carry,
            host,
        )  # fmt: skip
        try:
            await self._connect()
        except (StoreUnavailable, ConfigError):
            await self._disconnect()
            raise
        except Exception as exc:
            if not retry_later(exc):
                await self._disconnect()
                raise StoreUnavailable(f"cannot open the store at {where}: {exc}") from exc
            try:
                await self._zone_from_spill()
            except ConfigError:
                await self._disconnect()
                raise
            self._link.lost(exc)
        self._writer.start()
        self._reserver = asyncio.create_task(self._reserve_forever(), name="orchestra-reserver")
        self._refresher = asyncio.create_task(self._refresh_forever(), name="orchestra-spend")
        self._open = True
        _, _, aside = await asyncio.to_thread(self._spill.counts)
        if aside:
            log.error("store: %d spilled writes the database refused are kept aside in %s",
                      aside, self._spill.path)  # fmt: skip
        if not self.degraded:  # what the host's processes spilled, or hold offline, if any
            self._writer.submit(PgWrite(call=self._drain_quietly, quiet=True), wait=False)
        return self

    async def _connect(self) -> None:
        """Migrate (once), then read the totals: the first contact with the database."""
        assert self._pool is not None
        async with self._pool.acquire(timeout=self.options.timeouts.connect_s) as conn:
            if not self._migrated:
                await migrate(conn)
                self._migrated = True
            if not self._zoned:
                await self._store_zone(conn)
            await self._read_totals(conn)

    async def _store_zone(self, conn: Conn) -> None:
        """Count in the store's zone (recording ours if it has none). A config naming another is
        refused at open; after an outage the store's is taken anyway: it is what the others use."""
        stored = await budget_zone.pg_zone(conn, self.timezone or machine_zone())
        try:
            zone = budget_zone.agreed(stored, self.timezone, masked(self.url))
        except ConfigError as exc:
            if not self._open:
                raise
            log.error("store: %s; counting in %r meanwhile", exc, stored)
            zone = stored
        self._use_zone(zone)
        self._zoned = True
        if await asyncio.to_thread(self._spill.get, budget_zone.KEY) != zone:  # for a start cut off
            await asyncio.to_thread(self._spill.put, budget_zone.KEY, zone)

    def _use_zone(self, zone: str) -> None:
        self.calendar = calendar(zone)
        self._spend.calendar = self.calendar
        if self._writer is not None:
            self._writer.calendar = self.calendar

    async def set_timezone(self, zone: str) -> None:
        await self._run(lambda c: budget_zone.pg_set_zone(c, zone))
        self.timezone = None if self.timezone is None else zone
        self._use_zone(zone)
        await asyncio.to_thread(self._spill.put, budget_zone.KEY, zone)

    async def close(self) -> None:
        if self._open:
            with contextlib.suppress(StoreError):
                await self.flush()  # releases queued for the reserver are written too
        for task in (self._refresher, self._reserver, self._joining):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._refresher = self._reserver = self._joining = None
        while not self._asks.empty():
            item = self._asks.get_nowait()
            if item is not None and item[1] is not None and not item[1].done():
                item[1].set_exception(StoreError("the store is closing"))
        if self._writer is not None:
            with contextlib.suppress(StoreError):
                await self._writer.flush()
        if self._pool is not None and not self.degraded and self._open:
            with contextlib.suppress(Exception):
                await self._pool.execute(
                    "DELETE FROM store_clients WHERE owner = $1", self.owner, timeout=1.0
                )
        await self._disconnect()
        self._open = False

    async def _disconnect(self) -> None:
        if self._writer is not None:
            await self._writer.stop()
            self._writer = None
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), self.options.timeouts.connect_s)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                self._pool.terminate()
            self._pool = None
        await asyncio.to_thread(self._spill.close)

    # -- the link: degraded and back -------------------------------------------------------------

    def _lost(self, exc: BaseException) -> None:
        """The database stopped answering: reserve locally, spill writes, probe every second."""
        log.warning(
            "store: PostgreSQL at %s is unreachable (%s: %s); degraded: records go to %s",
            masked(self.url), type(exc).__name__, exc, self._spill.path,
        )  # fmt: skip
        now, known = time.time(), self._known
        join = Join(known=known, clients=self._clients, carried=self._granted, at=now)
        self._offline = OfflineLedger(self._spill, self.owner, join, since=now)
        self._interner = Interner()  # what it thinks stored may have died with the batch
        if known is not None:  # until the host's own totals are read (just below)
            self._spend.update(replace(known, reserved_usd=known.reserved_usd + self._granted))
        # Join the host's allowance at once, not at the first reservation: what this process
        # carries must count for the host's other processes too.
        self._joining = asyncio.get_running_loop().create_task(self._offline_totals())

    async def _offline_totals(self) -> None:
        offline = self._offline
        if offline is not None:
            try:
                self._spend.update(await asyncio.to_thread(offline.totals, time.time()))
            except Exception as exc:  # a busy file; the next round (or reservation) joins
                log.warning("store: cannot read the spill file %s: %s", self._spill.path, exc)

    def _carry(self, usd: float) -> None:
        """Charged here under a hold granted offline: out, yet in no totals read so far."""
        self._granted += usd

    async def _recover(self) -> bool:
        """(On the writer) Is the database back? Then drain the spill file and leave degraded
        mode; nothing else writes meanwhile, so nothing is spilled behind the drain."""
        assert self._writer is not None and self._pool is not None
        try:
            await self._pool.expire_connections()  # those of before the outage are dead
            await self._connect()  # the totals it keeps end this host's offline grants
            drained = await self._writer.drain()
            if drained is None:  # another process of the host drains (and carries) first
                return False
            if drained:  # totals read after the drain: what it wrote no longer counts apart
                async with self._pool.acquire(timeout=self.options.timeouts.connect_s) as conn:
                    await self._read_totals(conn)
        except Exception as exc:
            if retry_later(exc):  # unreachable still, or a drain that must wait (a lock...)
                return False
            raise
        self._link.degraded = False
        self._offline = None
        if self._unsure:  # grants unheard before the outage: taken back now, not at the next ask
            self._asks.put_nowait((_Flush(), None))
        log.warning("store: PostgreSQL at %s is back; %d spilled writes and offline holds"
                    " written to it", masked(self.url), drained)  # fmt: skip
        return True

    async def _drain_quietly(self) -> None:
        assert self._writer is not None
        try:
            drained = await self._writer.drain()
        except Exception as exc:
            if not retry_later(exc):
                raise
            self._link.lost(exc)  # degraded: the probe drains the file when it can
            return
        if drained:
            log.warning("store: %d spilled writes and offline holds written to PostgreSQL",
                        drained)  # fmt: skip

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                await self._refresh()
            except (StoreError, asyncpg.PostgresError) as exc:  # a busy moment; next round retries
                log.debug("store: spend refresh failed: %s", exc)

    async def _refresh(self) -> None:
        assert self._writer is not None and self._pool is not None
        if self.degraded and not await self._writer.run(self._recover):
            await self._offline_totals()
            return
        try:
            async with (
                self._reads,
                self._pool.acquire(timeout=self.options.timeouts.connect_s) as conn,
            ):
                await self._read_totals(conn, heartbeat=True)
        except Exception as exc:
            if not unreachable(exc):
                raise
            self._link.lost(exc)

    async def _read_totals(self, conn: Conn, heartbeat: bool = False) -> None:
        """Charge expired reservations, read the totals and how many processes share them."""
        now, granted = time.time(), self._granted
        expired = await conn.fetchval("SELECT 1 FROM reservations WHERE expires_at <= $1", now)
        if expired:
            async with conn.transaction():
                await pg_ledger.expire(conn, self.calendar, now)
        totals = await pg_ledger.totals(conn, self.calendar, now)
        await conn.execute(
            "INSERT INTO store_clients (owner, seen_at) VALUES ($1, $2)"
            " ON CONFLICT (owner) DO UPDATE SET seen_at = excluded.seen_at",
            self.owner,
            now,
        )
        self._clients = int(
            await conn.fetchval(
                "SELECT COUNT(DISTINCT split_part(owner, '/', 1)) FROM store_clients"
                " WHERE seen_at > $1",
                now - CLIENT_WINDOW_S,
            )
        )
        self._known, self._granted = totals, self._granted - granted
        self._spend.update(totals)
        if now - self._known_saved >= KNOWN_EVERY_S or not heartbeat:
            self._known_saved = now
            total, answered = await conn.fetchrow(
                "SELECT COALESCE(SUM(cost_usd), 0), COALESCE(SUM(answers), 0) FROM spend_day"
            ) or (0.0, 0)
            known = {"today_usd": totals.today_usd, "month_usd": totals.month_usd,
                     "reserved_usd": totals.reserved_usd, "last_hour_usd": totals.last_hour_usd,
                     "at": now, "clients": self._clients, "total_usd": float(total),
                     "answered": int(answered)}  # fmt: skip
            await asyncio.to_thread(self._spill.keep_known, known)

    async def _zone_from_spill(self) -> None:
        """Started during an outage: count in the store's zone as this host last saw it (else
        ours, until the store's is read when it answers)."""
        zone = await asyncio.to_thread(self._spill.get, budget_zone.KEY)
        if isinstance(zone, str):
            self._use_zone(budget_zone.agreed(zone, self.timezone, masked(self.url)))
        elif self.timezone is None:
            self._use_zone(machine_zone())

    # -- the write funnel ------------------------------------------------------------------------

    def _w(self) -> PgWriter:
        if self._writer is None or not self._writer.running:
            raise StoreError("the store is not open")
        return self._writer

    def record(self, record: RequestRecord) -> asyncio.Future[str]:
        charges = record.ledger_charges()
        rid, at = record.request.id, time.time()

        def make() -> Payload:
            blob, new = encode(
                record.decision, record.verdicts, record.attempts, record.ambient, self._interner
            )
            rows: dict[str, list[Any]] = {"request": [request_row(record, blob)]}
            if new:
                rows["shared"] = new
            return {
                "request": rid,
                "rows": rows,
                "charges": [charge_json(rid, c, c.at or at) for c in charges],
            }

        done = self._w().submit(PgWrite(make=make, money=bool(charges)), wait=True)
        assert done is not None
        return done

    def _queue(self, key: str, row: tuple[Any, ...], *, spill: bool = True) -> None:
        """A best-effort write (samples, breakers, cache): queued, its failure logged."""
        write = PgWrite(
            make=lambda: {"rows": {key: [row]}}, essential=False, spill=spill, quiet=True
        )
        self._w().submit(write, wait=False)

    def record_sample(self, verdict: Verdict) -> None:
        self._queue("sample", sample_row(verdict))

    def save_breaker(self, model: str, record: BreakerRecord) -> None:
        row = (model, record.state, record.failures, record.opened_at, record.updated_at)
        self._queue("breaker", row)

    def add_breaker_event(
        self, model: str, at: float, from_state: str, to_state: str, reason: str
    ) -> None:
        self._queue("breaker_event", (model, at, from_state, to_state, reason))

    def cache_answer(self, key: str, answer: CachedAnswer, expires_at: float) -> None:
        a = answer
        row = (key, a.model, str(a.tier), a.text, a.prompt_tokens, a.completion_tokens,
               a.created_at, expires_at)  # fmt: skip
        self._queue("cache", row, spill=False)

    def purge_cache(self, now: float) -> None:
        self._queue("purge", (now,), spill=False)

    async def add_feedback(self, request_id: str, good: bool, note: str | None, at: float) -> None:
        row = (request_id, at, int(good), note)
        done = self._w().submit(PgWrite(make=lambda: {"rows": {"feedback": [row]}}), wait=True)
        assert done is not None
        await done

    async def save_model(self, spec: ModelSpec, at: float) -> StoredModel:
        return await self._put_model(spec.name, spec, at)

    async def drop_model(self, name: str, at: float) -> StoredModel:
        return await self._put_model(name, None, at)

    async def _put_model(self, name: str, spec: ModelSpec | None, at: float) -> StoredModel:
        """An admin change: written at once, not spilled (degraded, it fails with StoreError:
        a change other hosts cannot see would make their catalogs differ silently)."""
        text = spec.model_dump_json(exclude_defaults=True) if spec is not None else None

        async def put(conn: Conn) -> int:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", MODELS_LOCK)
                return int(await conn.fetchval(_UPSERT_MODEL, name, text, at))

        return StoredModel(name, spec, await self._run(put), at)

    async def flush(self) -> None:
        if self._reserver is not None and not self._reserver.done():
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._asks.put_nowait((_Flush(), done))  # releases travel with the reservations
            await done
        if self._writer is not None:
            await self._writer.flush()

    # -- the ledger ------------------------------------------------------------------------------

    async def reserve(self, ask: Ask) -> Hold | Refusal:
        if self._reserver is None:
            raise StoreError("the store is not open")
        future: asyncio.Future[Hold | Refusal] = asyncio.get_running_loop().create_future()
        self._asks.put_nowait((ask, future))
        return await granted(future, self.release)

    async def _reserve_forever(self) -> None:
        """Take everything queued (asks, and releases: in queue order, so a release is seen by
        the asks after it), decide it in one transaction (or locally, degraded)."""
        while True:
            batch = [await self._asks.get()]
            while not self._asks.empty():
                batch.append(self._asks.get_nowait())
            items = [b for b in batch if b is not None]
            asks = [(item, future) for item, future in items if isinstance(item, Ask)]
            releases = [item for item, _ in items if isinstance(item, int)]
            flushes = [future for item, future in items if isinstance(item, _Flush)]
            try:
                decided = await self._decide([ask for ask, _ in asks], releases)
            except Exception as exc:
                error = exc if isinstance(exc, StoreError) else StoreError(
                    f"a budget reservation failed: {type(exc).__name__}: {exc}"
                )  # fmt: skip
                for _, future in asks:
                    if future is not None and not future.done():
                        future.set_exception(error)
                decided = []
            for (_, future), got in zip(asks, decided, strict=False):
                if future is not None and not future.done():
                    future.set_result(got)
            for future in flushes:  # a release that failed is charged when its lease runs out
                if future is not None and not future.done():
                    future.set_result(None)

    async def _decide(self, asks: list[Ask], releases: list[int]) -> list[Hold | Refusal]:
        assert self._pool is not None
        if not self.degraded:
            # Offline holds released once the database is back: in the spill file, and in the
            # database (all releases go there) if they were carried into it.
            if any(r < 0 for r in releases):
                local = [r for r in releases if r < 0]
                await asyncio.to_thread(self._spill.settle_offline, local)
            for attempt in range(2):  # a connection the server closed is replaced once
                now = self._stamp = max(time.time(), math.nextafter(self._stamp, math.inf))
                granted = self._granted
                try:
                    async with self._pool.acquire(timeout=self.options.timeouts.connect_s) as c:
                        out, after = await retrying(
                            partial(self._reserve_in, c, asks, releases, now)
                        )
                    self._unsure.clear()  # taken back in that transaction
                    if after is not None and any(isinstance(h, Hold) for h in out):
                        await self._keep_reserved(after, granted)
                    return out
                except Exception as exc:
                    if asks:  # its commit may have reached the server, unheard
                        self._unsure.append(now)
                    if not unreachable(exc):
                        raise
                    if attempt == 1:
                        self._link.lost(exc)
                    else:  # the server ended a session: likely all of them (a restart, sessions
                        # terminated), so the retry takes a new connection, not the pool's next
                        await self._pool.expire_connections()
        if releases:  # kept with the records, for when the database is back (an offline hold
            # too: it may be a reservation there now, carried when the database was last back)
            shared = list(releases)
            self._w().submit(PgWrite(make=lambda: {"releases": shared}, money=True), wait=False)
        offline = self._offline
        assert offline is not None
        local = [r for r in releases if r < 0]
        out, totals = await asyncio.to_thread(offline.reserve, asks, local, time.time())
        self._spend.update(totals)
        return out

    async def _keep_reserved(self, totals: SpendTotals, granted: float) -> None:
        """Totals with this process's grants in them: known here, and to the host's other
        processes through the spill file at once. One that loses the database before this one
        notices counts them (it would otherwise count the totals kept up to five seconds ago,
        and what the processes cut off before it had reserved: not what this one just did)."""
        self._known, self._granted = totals, self._granted - granted
        known = {"today_usd": totals.today_usd, "month_usd": totals.month_usd,
                 "reserved_usd": totals.reserved_usd, "last_hour_usd": totals.last_hour_usd,
                 "at": totals.at, "clients": self._clients}  # fmt: skip
        try:
            await asyncio.to_thread(self._spill.keep_known, known, synced=False)
        except Exception as exc:  # busy or broken: the grants are still in `_known`
            log.warning("store: cannot keep the totals in %s: %s", self._spill.path, exc)

    async def _reserve_in(
        self, conn: Conn, asks: list[Ask], releases: list[int], now: float
    ) -> tuple[list[Hold | Refusal], SpendTotals | None]:
        return await pg_ledger.reserve(
            conn, self.calendar, asks, self.owner, now, releases=releases, undo=self._unsure,
            host=self.owner.partition("/")[0],
        )  # fmt: skip

    def release(self, hold: Hold) -> None:
        if self._reserver is None:
            raise StoreError("the store is not open")
        self._asks.put_nowait((hold.id, None))

    async def spend_totals(self, now: float | None = None) -> SpendTotals:
        await self.flush()
        at = time.time() if now is None else now
        if self.degraded and self._offline is not None:
            return await asyncio.to_thread(self._offline.totals, at)
        rows = await self._run(lambda c: pg_ledger.totals(c, self.calendar, at))
        if now is None:
            self._spend.update(rows)
        return rows

    async def spend_summary(self, now: float | None = None) -> dict[str, Any]:
        await self.flush()
        at = time.time() if now is None else now
        waiting, _, aside = await asyncio.to_thread(self._spill.counts)
        spill = {"spill_pending": waiting, "spill_kept_aside": aside}
        if not self.degraded:
            try:
                summary = await self._run(lambda c: pg_ledger.summary(c, self.calendar, at))
                return {**summary, "timezone": self.calendar.timezone, "degraded": False, **spill}
            except StoreError:
                if not self.degraded:
                    raise
        return {**await self._offline_summary(at, waiting), **spill}

    async def spend_series(self, days: int = 30, now: float | None = None) -> dict[str, Any]:
        """A `StoreError` while degraded: the spill file holds no running sums to draw."""
        await self.flush()
        at = time.time() if now is None else now
        return await self._run(lambda c: pg_ledger.series(c, self.calendar, at, days))

    async def _offline_summary(self, now: float, waiting: int) -> dict[str, Any]:
        """Spend as far as this host can tell: the shared totals last read, plus what the spill
        file holds (not yet in them) and holds offline."""
        if self._offline is not None:  # holds past their lease are charged as lost first
            await asyncio.to_thread(self._offline.totals, now)
        stored, entries, held = await asyncio.to_thread(self._spill.unsettled)
        known = stored or {}
        today, month = self.calendar.day(now), self.calendar.month_first(now)
        add = {"today": 0.0, "month": 0.0, "total": 0.0, "answers": 0}
        by_model: dict[tuple[str, str], list[float]] = {}
        for payload in entries:
            for item in payload.get("charges", ()):
                _, c, at = charge_of(item)
                day = self.calendar.day(at)
                add["total"] += c.cost_usd
                add["today"] += c.cost_usd if day >= today else 0.0
                add["answers"] += int(c.kind == "answer")
                if day >= month:
                    add["month"] += c.cost_usd
                    row = by_model.setdefault((c.model, str(c.tier)), [0, 0, 0, 0.0])
                    for i, x in enumerate((int(c.kind == "answer"), c.prompt_tokens,
                                           c.completion_tokens, c.cost_usd)):  # fmt: skip
                        row[i] += x
        shared = SpendTotals(
            today_usd=float(known.get("today_usd", 0.0)) + add["today"],
            month_usd=float(known.get("month_usd", 0.0)) + add["month"],
            reserved_usd=float(known.get("reserved_usd", 0.0)) + held,
        )
        most_first = sorted(by_model.items(), key=lambda kv: (-kv[1][3], kv[0]))
        total = float(known.get("total_usd", 0.0)) + add["total"]
        answered = int(known.get("answered", 0)) + int(add["answers"])
        return {
            **spend_summary(shared, total, answered, [(*key, *r) for key, r in most_first]),
            "timezone": self.calendar.timezone,
            "degraded": True,
            "known_at": known.get("at"),
            "spill_pending": waiting,
        }

    # -- reads -----------------------------------------------------------------------------------

    async def _run(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        if self._pool is None:
            raise StoreError("the store is not open")
        if self.degraded:  # only the refresher probes: a read must not wait on a dead link
            raise StoreError(f"the store at {masked(self.url)} is unreachable (degraded)")
        try:
            async with (
                self._reads,
                self._pool.acquire(timeout=self.options.timeouts.connect_s) as conn,
            ):
                return await fn(conn)
        except StoreError:
            raise
        except Exception as exc:
            if unreachable(exc):
                self._link.lost(exc)
                raise StoreError(
                    f"the store at {masked(self.url)} is unreachable: {type(exc).__name__}: {exc}"
                ) from exc
            raise StoreError(f"cannot read the store at {masked(self.url)}: {exc}") from exc

    async def _fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return await self._run(lambda c: _fetch_rows(c, sql, args))

    async def fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run any read query written with `?` marks (as for `SqliteStore.fetch`): for tests and
        debugging; not part of `Store`."""
        count = iter(range(1, len(params) + 1))
        return await self._fetch(re.sub(r"\?", lambda _: f"${next(count)}", sql), *params)

    async def history(self, limit: int = 20, since: float | None = None) -> list[dict[str, Any]]:
        rows = await self._fetch(_HISTORY, since or 0.0, limit)
        return await reads.history(rows, self._shared, self._latest_feedback)

    async def _shared(self, keys: set[str]) -> dict[str, str]:
        if not keys:
            return {}
        rows = await self._fetch(
            "SELECT key, json FROM shared WHERE key = ANY($1::text[])", list(keys)
        )
        return {k: v for k, v in rows}

    async def _latest_feedback(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        if not ids:
            return {}
        rows = await self._fetch(
            "SELECT request_id, good, at, note FROM feedback WHERE id IN"
            " (SELECT MAX(id) FROM feedback WHERE request_id = ANY($1::text[])"
            " GROUP BY request_id)",
            ids,
        )
        return shaping.latest_feedback(rows)

    async def samples(self, agent: str | None = None, limit: int = 100) -> list[Verdict]:
        if agent is None:
            rows = await self._fetch(
                "SELECT verdict FROM samples ORDER BY at DESC, id DESC LIMIT $1", limit
            )
        else:
            rows = await self._fetch(
                "SELECT verdict FROM samples WHERE agent = $1 ORDER BY at DESC, id DESC LIMIT $2",
                agent,
                limit,
            )
        return shaping.samples(rows)

    async def find_request(self, ref: str, min_prefix: int) -> list[RequestRef]:
        rows = await self._fetch("SELECT id, model, tier FROM requests WHERE id = $1", ref)
        if not rows and len(ref) >= min_prefix:
            rows = await self._fetch(
                "SELECT id, model, tier FROM requests WHERE substr(id, 1, $1) = $2 LIMIT 3",
                len(ref),
                ref,
            )
        return shaping.request_refs(rows)

    async def judged_requests(self) -> list[Judged]:
        return await reads.judged(await self._fetch(_JUDGED), self._shared)

    async def breaker_records(self) -> dict[str, BreakerRecord]:
        rows = await self._fetch(
            "SELECT model, state, failures, opened_at, updated_at FROM breaker_state"
        )
        return shaping.breaker_records(rows)

    async def cached_answer(self, key: str, now: float) -> tuple[CachedAnswer, float] | None:
        rows = await self._fetch(
            "SELECT model, tier, text, prompt_tokens, completion_tokens, created_at, expires_at"
            " FROM response_cache WHERE key = $1 AND expires_at > $2",
            key,
            now,
        )
        return shaping.cached_answer(rows)

    async def stored_models(self, after_version: int = 0) -> list[StoredModel]:
        rows = await self._fetch(
            "SELECT name, spec, version, updated_at FROM models WHERE version > $1"
            " ORDER BY version",
            after_version,
        )
        return shaping.stored_models(rows)

    def opener(self) -> Callable[[], Store]:
        return partial(PostgresStore, self.url, self.options, self.timezone)

    async def count_requests(self, since: float | None = None) -> int:
        since_ = since if since is not None else float("-inf")
        rows = await self._fetch("SELECT COUNT(*) FROM requests WHERE created_at >= $1", since_)
        return int(rows[0][0])

    async def replay_batches(
        self, since: float | None, limit: int | None, batch: int, part: tuple[int, int] = (0, 1)
    ) -> AsyncIterator[ReplayBatch]:
        k, n = checked_part(part)
        select = f"SELECT {_REPLAY_COLUMNS} FROM requests WHERE created_at >= $1"
        if n > 1:  # constants: checked integers
            select += f" AND seq % {n} = {k}"
        order = " ORDER BY created_at DESC, seq DESC LIMIT "

        async def page(
            since_: float, cursor: tuple[float, int] | None, size: int
        ) -> list[tuple[Any, ...]]:
            if cursor is None:
                return await self._fetch(select + order + "$2", since_, size)
            return await self._fetch(  # keyset pagination: the page after the last row seen
                select + " AND (created_at, seq) < ($2, $3)" + order + "$4",
                since_,
                cursor[0],
                cursor[1],
                size,
            )

        async for page_ in reads.replay(page, self._shared, since, limit, batch):
            yield page_


async def _fetch_rows(conn: Conn, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
    return records(await conn.fetch(sql, *args))
