"""The SQLite store: one writer committing batches (group commit), reads beside it (WAL)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any, Self

import aiosqlite

import orchestra.store.budget_zone as budget_zone
import orchestra.store.reads as reads
import orchestra.store.shaping as shaping
import orchestra.store.sqlite_ledger as sqlite_ledger
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
from orchestra.store.detail import Interner
from orchestra.store.record import (
    INSERT_SAMPLE,
    RecordId,
    RequestRecord,
    record_rows,
    renamed,
    sample_row,
)
from orchestra.store.sqlite_writer import Statements, Write, Writer
from orchestra.store.sync import DEFAULT_SYNC, Sync
from orchestra.store.write_outcomes import granted

log = logging.getLogger("orchestra.store")

REFRESH_S = 1.0  # how often the spend view catches up with other processes

_UPSERT_BREAKER = (
    "INSERT INTO breaker_state (model, state, failures, opened_at, updated_at)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT(model) DO UPDATE SET state = excluded.state,"
    " failures = excluded.failures, opened_at = excluded.opened_at,"
    " updated_at = excluded.updated_at"
)
_INSERT_BREAKER_EVENT = (
    "INSERT INTO breaker_events (model, at, from_state, to_state, reason) VALUES (?, ?, ?, ?, ?)"
)
_UPSERT_CACHE = (
    "INSERT OR REPLACE INTO response_cache (key, model, tier, text, prompt_tokens,"
    " completion_tokens, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_PURGE_CACHE = "DELETE FROM response_cache WHERE expires_at <= ?"
# A change takes the next version of all (the write lock makes it unique across processes).
_UPSERT_MODEL = (
    "INSERT INTO models (name, spec, version, updated_at)"
    " VALUES (?, ?, (SELECT COALESCE(MAX(version), 0) + 1 FROM models), ?)"
    " ON CONFLICT(name) DO UPDATE SET spec = excluded.spec, version = excluded.version,"
    " updated_at = excluded.updated_at"
)
_INSERT_FEEDBACK = "INSERT INTO feedback (request_id, at, good, note) VALUES (?, ?, ?, ?)"
# The newest feedback per request, with what the request kept: its tier, its transcript (only
# with keep_prompts) and the complexity agent's recorded metrics.
# The newest feedback per request, with what the request kept: its tier, its transcript (only
# with keep_prompts) and its detail (where the complexity agent's metrics are).
_JUDGED = """
SELECT r.id, r.status, r.tier, r.prompt, f.good, r.detail
FROM feedback f JOIN requests r ON r.id = f.request_id
WHERE f.id IN (SELECT MAX(id) FROM feedback GROUP BY request_id)
ORDER BY f.id
"""
_REPLAY_REQUESTS = (
    "SELECT rowid, id, created_at, status, model, tier, cost_usd, prompt_tokens,"
    " completion_tokens, features, prompt, forced_model, forced_tier, error_kind, detail"
    " FROM requests WHERE created_at >= ?"
)


class SqliteStore(Store):
    """The store in one SQLite file (WAL), shared safely by every process on the machine.

    Writes are queued and committed by one writer in batches (see `Writer`): a record is on disk
    when the future `record()` returns resolves. Reads go through their own connection and see
    only committed rows (`flush()` first to read your own writes). It is also the ledger: budget
    reservations are taken in the writer's transactions, against every process's spend.
    `timezone` is the config's budget calendar (None: the store's, see `budget_zone`); once
    open, `calendar` is the store's. `sync` says whether each commit is synced to the disk
    before it is reported done (`orchestra.store.sync`).
    """

    def __init__(
        self, path: str | Path, timezone: str | None = None, *, sync: Sync = DEFAULT_SYNC
    ) -> None:
        self.path = Path(path)
        self.timezone = timezone
        self.calendar: Calendar = calendar(timezone)
        self._spend = SpendTracker(calendar=self.calendar)
        self._db: aiosqlite.Connection | None = None
        self._writer = Writer(
            self.path, self.calendar, self._spend.update, self._forget_shared, sync=sync
        )
        self._interner = Interner()  # used on the writer's thread only
        self._refresher: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    @property
    def spend(self) -> SpendTracker:
        return self._spend

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> Self:
        if self._open:
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            await self._writer.start()
            self._use_zone(await self._writer.run(self._store_zone))
            self._db = await aiosqlite.connect(self.path, timeout=30.0)
            self._spend.update(await self._writer.run(self._writer.refresh))
        except ConfigError:
            await self._disconnect()
            raise
        except (StoreError, sqlite3.Error, OSError) as exc:
            await self._disconnect()
            raise StoreUnavailable(f"cannot open the store at {self.path}: {exc}") from exc
        self._refresher = asyncio.create_task(self._refresh_forever(), name="orchestra-spend")
        self._open = True
        return self

    def _store_zone(self) -> str:
        """(Writer thread) The store's budget zone, recorded first if it has none."""
        conn = self._writer.connection
        stored = budget_zone.sqlite_zone(conn, self.timezone or machine_zone())
        return budget_zone.agreed(stored, self.timezone, str(self.path))

    def _use_zone(self, zone: str) -> None:
        self.calendar = calendar(zone)
        self._spend.calendar = self._writer.calendar = self.calendar

    async def set_timezone(self, zone: str) -> None:
        def put() -> None:
            budget_zone.sqlite_set_zone(self._writer.connection, zone)

        await self._writer.run(put)
        self.timezone = None if self.timezone is None else zone
        self._use_zone(zone)

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        with contextlib.suppress(StoreError):
            await self._writer.flush()
        await self._disconnect()
        self._open = False

    async def _disconnect(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None
        await self._writer.stop()

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                self._spend.update(await self._writer.run(self._writer.refresh))
                await self._checkpoint()
            except (sqlite3.Error, StoreError) as exc:  # a busy moment; the next round retries
                log.debug("store: spend refresh failed: %s", exc)

    async def _checkpoint(self) -> None:
        """Move the WAL into the database file on the reader's connection (PASSIVE: it never
        blocks the writer), so that commits never wait for a checkpoint."""
        db = self._require_db()
        async with db.execute("PRAGMA wal_checkpoint(PASSIVE)") as cursor:
            await cursor.fetchall()

    # -- the write funnel ------------------------------------------------------------------------

    def record(self, record: RequestRecord) -> asyncio.Future[str]:
        charges = record.ledger_charges()
        cal, key, at = self.calendar, RecordId(record.request.id), time.time()

        def apply(conn: sqlite3.Connection) -> str:
            for c in charges:
                sqlite_ledger.charge(conn, cal, key.value, c, c.at or at)
            return key.value  # the id the record got

        write = Write(
            make=lambda: record_rows(record, self._interner),
            apply=apply,
            renew=lambda statements: renamed(statements, key.renew()),
            money=bool(charges),
        )
        done = self._writer.submit(write, wait=True)
        assert done is not None
        return done

    def _forget_shared(self) -> None:
        """(Writer thread) A write failed: the shared values it was to store may not be there,
        so none is taken as stored any more (each is written again when next seen)."""
        self._interner = Interner()

    def record_sample(self, verdict: Verdict) -> None:
        write = Write(make=lambda: [(INSERT_SAMPLE, [sample_row(verdict)])])
        write.quiet = True
        self._writer.submit(write, wait=False)

    def save_breaker(self, model: str, record: BreakerRecord) -> None:
        row = (model, record.state, record.failures, record.opened_at, record.updated_at)
        self._queue_rows([(_UPSERT_BREAKER, [row])])

    def add_breaker_event(
        self, model: str, at: float, from_state: str, to_state: str, reason: str
    ) -> None:
        self._queue_rows([(_INSERT_BREAKER_EVENT, [(model, at, from_state, to_state, reason)])])

    def cache_answer(self, key: str, answer: CachedAnswer, expires_at: float) -> None:
        a = answer
        row = (key, a.model, str(a.tier), a.text, a.prompt_tokens, a.completion_tokens,
               a.created_at, expires_at)  # fmt: skip
        self._queue_rows([(_UPSERT_CACHE, [row])])

    def purge_cache(self, now: float) -> None:
        self._queue_rows([(_PURGE_CACHE, [(now,)])])

    async def add_feedback(self, request_id: str, good: bool, note: str | None, at: float) -> None:
        row = (request_id, at, int(good), note)
        done = self._writer.submit(Write(make=lambda: [(_INSERT_FEEDBACK, [row])]), wait=True)
        assert done is not None
        await done

    async def save_model(self, spec: ModelSpec, at: float) -> StoredModel:
        return await self._put_model(spec.name, spec, at)

    async def drop_model(self, name: str, at: float) -> StoredModel:
        return await self._put_model(name, None, at)

    async def _put_model(self, name: str, spec: ModelSpec | None, at: float) -> StoredModel:
        text = spec.model_dump_json(exclude_defaults=True) if spec is not None else None

        def put(conn: sqlite3.Connection) -> int:
            conn.execute(_UPSERT_MODEL, (name, text, at))
            row = conn.execute("SELECT version FROM models WHERE name = ?", (name,)).fetchone()
            return int(row[0])

        done = self._writer.submit(Write(apply=put), wait=True)
        assert done is not None
        return StoredModel(name, spec, await done, at)

    async def flush(self) -> None:
        await self._writer.flush()

    def _queue_rows(self, statements: Statements) -> None:
        """A best-effort write (samples, breakers, cache): queued, its failure logged."""
        self._writer.submit(Write(make=lambda: statements, quiet=True), wait=False)

    # -- the ledger ------------------------------------------------------------------------------

    async def reserve(self, ask: Ask) -> Hold | Refusal:
        done = self._writer.submit(Write(ask=ask, money=True), wait=True)
        assert done is not None
        return await granted(done, self.release)

    def release(self, hold: Hold) -> None:
        cal = self.calendar
        self._writer.submit(
            Write(apply=lambda conn: sqlite_ledger.release(conn, cal, hold.id), money=True),
            wait=False,
        )

    async def spend_totals(self, now: float | None = None) -> SpendTotals:
        await self.flush()
        at = time.time() if now is None else now
        if now is None:
            totals: SpendTotals = await self._writer.run(self._writer.refresh)
            self._spend.update(totals)
            return totals
        return await self._writer.run(lambda: self._writer.read(sqlite_ledger.totals, at))  # type: ignore[no-any-return]

    async def spend_summary(self, now: float | None = None) -> dict[str, Any]:
        await self.flush()
        at = time.time() if now is None else now
        summary = await self._writer.run(lambda: self._writer.read(sqlite_ledger.summary, at))
        return {**summary, "timezone": self.calendar.timezone}

    async def spend_series(self, days: int = 30, now: float | None = None) -> dict[str, Any]:
        await self.flush()
        at = time.time() if now is None else now
        read = partial(sqlite_ledger.series, days=days)
        return await self._writer.run(lambda: self._writer.read(read, at))  # type: ignore[no-any-return]

    async def history(self, limit: int = 20, since: float | None = None) -> list[dict[str, Any]]:
        rows = await self._fetch(
            "SELECT id, created_at, status, model, tier, cost_usd, latency_ms, prompt_tokens,"
            " completion_tokens, features, forced_model, forced_tier, stream, error_kind, error,"
            " detail FROM requests WHERE created_at >= ?"
            " ORDER BY created_at DESC, rowid DESC LIMIT ?",
            (since or 0.0, limit),
        )
        return await reads.history(rows, self._shared, self._latest_feedback)

    async def _shared(self, keys: set[str]) -> dict[str, str]:
        """Shared values (JSON) by key (see `orchestra.store.detail`)."""
        out: dict[str, str] = {}
        keys_ = sorted(keys)
        for i in range(0, len(keys_), 500):  # SQLite caps the number of parameters
            chunk = tuple(keys_[i : i + 500])
            marks = ", ".join("?" * len(chunk))
            rows = await self._fetch(f"SELECT key, json FROM shared WHERE key IN ({marks})", chunk)
            out.update((k, v) for k, v in rows)
        return out

    async def samples(self, agent: str | None = None, limit: int = 100) -> list[Verdict]:
        sql = "SELECT verdict FROM samples"
        params: tuple[Any, ...] = ()
        if agent is not None:
            sql, params = sql + " WHERE agent = ?", (agent,)
        rows = await self._fetch(sql + " ORDER BY at DESC, id DESC LIMIT ?", (*params, limit))
        return shaping.samples(rows)

    async def find_request(self, ref: str, min_prefix: int) -> list[RequestRef]:
        rows = await self._fetch("SELECT id, model, tier FROM requests WHERE id = ?", (ref,))
        if not rows and len(ref) >= min_prefix:
            rows = await self._fetch(
                "SELECT id, model, tier FROM requests WHERE substr(id, 1, ?) = ? LIMIT 3",
                (len(ref), ref),
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
            " FROM response_cache WHERE key = ? AND expires_at > ?",
            (key, now),
        )
        return shaping.cached_answer(rows)

    async def stored_models(self, after_version: int = 0) -> list[StoredModel]:
        rows = await self._fetch(
            "SELECT name, spec, version, updated_at FROM models WHERE version > ? ORDER BY version",
            (after_version,),
        )
        return shaping.stored_models(rows)

    async def count_requests(self, since: float | None = None) -> int:
        since_ = since if since is not None else float("-inf")
        rows = await self._fetch("SELECT COUNT(*) FROM requests WHERE created_at >= ?", (since_,))
        return int(rows[0][0])

    async def replay_batches(
        self, since: float | None, limit: int | None, batch: int, part: tuple[int, int] = (0, 1)
    ) -> AsyncIterator[ReplayBatch]:
        order = " ORDER BY created_at DESC, rowid DESC LIMIT ?"
        k, n = checked_part(part)
        where: tuple[int, ...]
        select, where = _REPLAY_REQUESTS, ()
        if n > 1:  # only the part's rows
            select, where = select + " AND rowid % ? = ?", (n, k)

        async def page(
            since_: float, cursor: tuple[float, int] | None, size: int
        ) -> list[tuple[Any, ...]]:
            if cursor is None:
                return await self._fetch(select + order, (since_, *where, size))
            return await self._fetch(  # keyset pagination: the page after the last row seen
                select + " AND created_at <= ? AND NOT (created_at = ? AND rowid >= ?)" + order,
                (since_, *where, cursor[0], cursor[0], cursor[1], size),
            )

        async for page_ in reads.replay(page, self._shared, since, limit, batch):
            yield page_

    def opener(self) -> Callable[[], Store]:
        return partial(SqliteStore, self.path, self.timezone, sync=self._writer.sync)

    async def fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run any read query: for tests and debugging (SQLite only; not part of `Store`)."""
        return await self._fetch(sql, params)

    async def _latest_feedback(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """The newest feedback row of each of `ids` that has one."""
        if not ids:
            return {}
        marks = ", ".join("?" * len(ids))
        rows = await self._fetch(
            "SELECT request_id, good, at, note FROM feedback WHERE id IN"
            f" (SELECT MAX(id) FROM feedback WHERE request_id IN ({marks}) GROUP BY request_id)",
            tuple(ids),
        )
        return shaping.latest_feedback(rows)

    async def _fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        db = self._require_db()
        try:
            async with db.execute(sql, params) as cursor:
                return [tuple(r) for r in await cursor.fetchall()]
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the store at {self.path}: {exc}") from exc

    def _require_db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("the store is not open")
        return self._db
