"""The SQLite store: one writer thread committing batches (group commit), reads beside it (WAL)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Self

import aiosqlite

from orchestra.core.errors import StoreError, StoreUnavailable
from orchestra.core.feedback import Judged, RequestRef
from orchestra.core.tier import Tier
from orchestra.core.verdict import Verdict
from orchestra.execution.breaker.storage import BreakerRecord
from orchestra.execution.cache import CachedAnswer
from orchestra.spend.tracker import day_start, month_start
from orchestra.store.base import ReplayBatch, Store
from orchestra.store.record import RequestRecord, record_rows, sample_row
from orchestra.store.schema import migrate

log = logging.getLogger("orchestra.store")

Rows = list[tuple[Any, ...]]
Statements = list[tuple[str, Rows]]

_INSERT_SAMPLE = "INSERT INTO samples (agent, at, state, verdict) VALUES (?, ?, ?, ?)"
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
_INSERT_FEEDBACK = "INSERT INTO feedback (request_id, at, good, note) VALUES (?, ?, ?, ?)"
# The newest feedback per request, with what the request kept: its tier, its transcript (only
# with keep_prompts) and the complexity agent's recorded metrics.
_JUDGED = """
SELECT r.id, r.status, r.tier, r.prompt, f.good,
       (SELECT v.metrics FROM verdicts v WHERE v.request_id = r.id AND v.agent = 'complexity'
        ORDER BY v.position LIMIT 1)
FROM feedback f JOIN requests r ON r.id = f.request_id
WHERE f.id IN (SELECT MAX(id) FROM feedback GROUP BY request_id)
ORDER BY f.id
"""
_REPLAY_REQUESTS = (
    "SELECT rowid, id, created_at, status, model, tier, cost_usd, prompt_tokens,"
    " completion_tokens, features, prompt, forced_model, forced_tier, error_kind,"
    " json_extract(decision, '$.candidates'), json_extract(decision, '$.target')"
    " FROM requests WHERE created_at >= ?"
)
_REPLAY_VERDICTS = (
    "SELECT request_id, agent, target, allowed, denied_models, confidence, state, reason,"
    " metrics, at, stale, neutral FROM verdicts WHERE request_id IN ({marks})"
    " ORDER BY request_id, position"
)


@dataclass(slots=True)
class _Write:
    """One unit of the write queue: how to make its statements, and who waits for the commit.

    `make` runs in the writer thread (turning a record into rows is work the event loop is spared).
    A write with no `make` is a flush marker.
    """

    make: Callable[[], Statements] | None
    done: asyncio.Future[None] | None = None
    quiet: bool = False  # a failure is logged rather than left for the next flush to raise
    error: BaseException | None = field(default=None, repr=False)


class SqliteStore(Store):
    """The store in one SQLite file (WAL), shared safely by every process on the machine.

    Writes are queued and committed by a writer task in batches: everything queued while a batch
    was being written goes into the next one, in one transaction on a dedicated thread. A batch
    that fails is retried one write at a time, so one bad write costs no other. Reads go through
    their own connection and see only committed rows (`flush()` first to read your own writes).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None
        self._conn: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._queue: asyncio.Queue[_Write] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._unreported: StoreError | None = None

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> Self:
        if self._open:
            return self
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="orchestra-store-writer")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            await self._in_writer(self._connect_writer)
            self._db = await aiosqlite.connect(self.path, timeout=30.0)
        except (StoreError, sqlite3.Error, OSError) as exc:
            await self._disconnect()
            raise StoreUnavailable(f"cannot open the store at {self.path}: {exc}") from exc
        self._writer = asyncio.create_task(self._write_forever(), name="orchestra-store-writer")
        self._open = True
        return self

    async def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(StoreError):
                await self.flush()
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        await self._disconnect()
        self._open = False

    def _connect_writer(self) -> None:
        # isolation_level=None: transactions are ours (BEGIN IMMEDIATE), never implicit.
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            _with_retry(lambda: conn.execute("PRAGMA journal_mode=WAL"))
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def _disconnect(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None
        if self._thread is not None:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                await self._in_writer(conn.close)
            self._thread.shutdown(wait=True)
            self._thread = None

    async def _in_writer(self, fn: Callable[[], Any]) -> Any:
        assert self._thread is not None
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    # -- the write funnel ------------------------------------------------------------------------

    def record(self, record: RequestRecord) -> asyncio.Future[None]:
        return self._enqueue(lambda: record_rows(record), wait=True)

    def record_sample(self, verdict: Verdict) -> None:
        self._enqueue(lambda: [(_INSERT_SAMPLE, [sample_row(verdict)])], quiet=True)

    def save_breaker(self, model: str, record: BreakerRecord) -> None:
        row = (model, record.state, record.failures, record.opened_at, record.updated_at)
        self._enqueue(lambda: [(_UPSERT_BREAKER, [row])], quiet=True)

    def add_breaker_event(
        self, model: str, at: float, from_state: str, to_state: str, reason: str
    ) -> None:
        row = (model, at, from_state, to_state, reason)
        self._enqueue(lambda: [(_INSERT_BREAKER_EVENT, [row])], quiet=True)

    def cache_answer(self, key: str, answer: CachedAnswer, expires_at: float) -> None:
        a = answer
        row = (key, a.model, str(a.tier), a.text, a.prompt_tokens, a.completion_tokens,
               a.created_at, expires_at)  # fmt: skip
        self._enqueue(lambda: [(_UPSERT_CACHE, [row])], quiet=True)

    def purge_cache(self, now: float) -> None:
        self._enqueue(lambda: [(_PURGE_CACHE, [(now,)])], quiet=True)

    async def add_feedback(self, request_id: str, good: bool, note: str | None, at: float) -> None:
        row = (request_id, at, int(good), note)
        await self._enqueue(lambda: [(_INSERT_FEEDBACK, [row])], wait=True)

    async def flush(self) -> None:
        if self._writer is None or self._writer.done():
            return
        marker = _Write(None, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(marker)
        assert marker.done is not None
        await marker.done

    def _enqueue(
        self, make: Callable[[], Statements], *, wait: bool = False, quiet: bool = False
    ) -> asyncio.Future[None]:
        if self._writer is None:
            raise StoreError("the store is not open")
        done = asyncio.get_running_loop().create_future() if wait else None
        self._queue.put_nowait(_Write(make, done, quiet=quiet and not wait))
        if done is None:
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
        return done

    async def _write_forever(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            writes = [w for w in batch if w.make is not None]
            if writes:
                try:
                    await self._in_writer(partial(self._commit, writes))
                except Exception as exc:  # the writer must outlive any one batch
                    for w in writes:
                        w.error = w.error or exc
            self._settle(batch)

    def _settle(self, batch: list[_Write]) -> None:
        """Tell each waiter how its write went; a failure nobody waits for is kept for the next
        `flush()` (or logged, for best-effort writes such as samples)."""
        for w in batch:
            if w.make is None:
                continue
            error = None if w.error is None else _store_error(w.error)
            if w.done is not None and not w.done.done():
                if error is None:
                    w.done.set_result(None)
                else:
                    w.done.set_exception(error)
                    w.done.exception()  # a caller that gave up waiting must not leave it unseen
            elif error is not None and w.quiet:
                log.warning("store: a write failed and is dropped: %s", error)
            elif error is not None:
                self._unreported = error
        for w in batch:
            if w.make is None and w.done is not None and not w.done.done():
                failed, self._unreported = self._unreported, None
                if failed is None:
                    w.done.set_result(None)
                else:
                    w.done.set_exception(failed)

    def _commit(self, writes: list[_Write]) -> None:
        """Write a batch in one transaction; if it fails, each write in its own (writer thread)."""
        made: list[tuple[_Write, Statements]] = []
        for w in writes:
            try:
                assert w.make is not None
                made.append((w, w.make()))
            except Exception as exc:  # one bad record must not cost the others
                log.exception("store: cannot serialise a write; it is dropped")
                w.error = exc
        if not made:
            return
        try:
            self._transaction(_grouped(s for _, s in made))
            return
        except sqlite3.Error as exc:
            if len(made) == 1:
                made[0][0].error = exc
                return
        for w, statements in made:
            try:
                self._transaction(statements)
            except sqlite3.Error as exc:
                w.error = exc

    def _transaction(self, statements: Statements) -> None:
        conn = self._conn
        if conn is None:
            raise sqlite3.OperationalError("the store is closed")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, rows in statements:
                conn.executemany(sql, rows)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # -- reads -----------------------------------------------------------------------------------

    async def spend_totals(self, now: float | None = None) -> tuple[float, float]:
        now = time.time() if now is None else now
        rows = await self._fetch(
            "SELECT COALESCE(SUM(CASE WHEN at >= ? THEN cost_usd END), 0),"
            " COALESCE(SUM(cost_usd), 0) FROM ledger WHERE at >= ?",
            (day_start(now), month_start(now)),
        )
        return float(rows[0][0]), float(rows[0][1])

    async def spend_summary(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        today, month = await self.spend_totals(now)
        total = await self._fetch("SELECT COALESCE(SUM(cost_usd), 0), COUNT(*) FROM ledger")
        by_model = await self._fetch(
            "SELECT model, tier, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens),"
            " SUM(cost_usd) FROM ledger WHERE at >= ? GROUP BY model, tier ORDER BY 6 DESC, 1",
            (month_start(now),),
        )
        return {
            "today_usd": today,
            "month_usd": month,
            "total_usd": float(total[0][0]),
            "answered_requests": int(total[0][1]),
            "month_by_model": [
                {
                    "model": m,
                    "tier": t,
                    "requests": n,
                    "prompt_tokens": pt,
                    "completion_tokens": ct,
                    "cost_usd": c,
                }
                for m, t, n, pt, ct, c in by_model
            ],
        }

    async def history(self, limit: int = 20, since: float | None = None) -> list[dict[str, Any]]:
        rows = await self._fetch(
            "SELECT id, created_at, status, model, tier, cost_usd, latency_ms, prompt_tokens,"
            " completion_tokens, features, forced_model, forced_tier, stream, decision,"
            " error_kind, error FROM requests WHERE created_at >= ?"
            " ORDER BY created_at DESC, rowid DESC LIMIT ?",
            (since or 0.0, limit),
        )
        ids = [r[0] for r in rows]
        verdicts = await self._children("verdicts", ids)
        attempts = await self._children("attempts", ids)
        feedback = await self._latest_feedback(ids)
        return [
            {
                **_history_entry(r, verdicts.get(r[0], []), attempts.get(r[0], [])),
                "feedback": feedback.get(r[0]),
            }
            for r in rows
        ]

    async def samples(self, agent: str | None = None, limit: int = 100) -> list[Verdict]:
        sql = "SELECT verdict FROM samples"
        params: tuple[Any, ...] = ()
        if agent is not None:
            sql, params = sql + " WHERE agent = ?", (agent,)
        rows = await self._fetch(sql + " ORDER BY at DESC, id DESC LIMIT ?", (*params, limit))
        return [Verdict.model_validate_json(r[0]) for r in rows]

    async def find_request(self, ref: str, min_prefix: int) -> list[RequestRef]:
        rows = await self._fetch("SELECT id, model, tier FROM requests WHERE id = ?", (ref,))
        if not rows and len(ref) >= min_prefix:
            rows = await self._fetch(
                "SELECT id, model, tier FROM requests WHERE substr(id, 1, ?) = ? LIMIT 3",
                (len(ref), ref),
            )
        return [RequestRef(str(rid), model, tier) for rid, model, tier in rows]

    async def judged_requests(self) -> list[Judged]:
        return [
            Judged(rid, status, tier, prompt, bool(good), metrics)
            for rid, status, tier, prompt, good, metrics in await self._fetch(_JUDGED)
        ]

    async def breaker_records(self) -> dict[str, BreakerRecord]:
        rows = await self._fetch(
            "SELECT model, state, failures, opened_at, updated_at FROM breaker_state"
        )
        return {
            model: BreakerRecord(
                state=state, failures=int(failures), opened_at=opened_at, updated_at=updated_at
            )
            for model, state, failures, opened_at, updated_at in rows
        }

    async def cached_answer(self, key: str, now: float) -> tuple[CachedAnswer, float] | None:
        rows = await self._fetch(
            "SELECT model, tier, text, prompt_tokens, completion_tokens, created_at, expires_at"
            " FROM response_cache WHERE key = ? AND expires_at > ?",
            (key, now),
        )
        if not rows:
            return None
        model, tier, text, prompt_tokens, completion_tokens, created_at, expires_at = rows[0]
        answer = CachedAnswer(
            model=model,
            tier=Tier(tier),
            text=text,
            prompt_tokens=int(prompt_tokens),
            completion_tokens=int(completion_tokens),
            created_at=float(created_at),
        )
        return answer, float(expires_at)

    async def count_requests(self, since: float | None = None) -> int:
        since_ = since if since is not None else float("-inf")
        rows = await self._fetch("SELECT COUNT(*) FROM requests WHERE created_at >= ?", (since_,))
        return int(rows[0][0])

    async def replay_batches(
        self, since: float | None, limit: int | None, batch: int
    ) -> AsyncIterator[ReplayBatch]:
        since_ = since if since is not None else float("-inf")
        left = limit if limit is not None else -1
        cursor: tuple[float, int] | None = None
        order = " ORDER BY created_at DESC, rowid DESC LIMIT ?"
        while left != 0:
            size = batch if left < 0 else min(batch, left)
            if cursor is None:
                rows = await self._fetch(_REPLAY_REQUESTS + order, (since_, size))
            else:  # keyset pagination: the next page starts after the last row seen
                rows = await self._fetch(
                    _REPLAY_REQUESTS
                    + " AND created_at <= ? AND NOT (created_at = ? AND rowid >= ?)"
                    + order,
                    (since_, cursor[0], cursor[0], cursor[1], size),
                )
            if not rows:
                return
            cursor = (rows[-1][2], rows[-1][0])
            left = left - len(rows) if left > 0 else left
            ids = tuple(r[1] for r in rows)
            verdicts = await self._fetch(
                _REPLAY_VERDICTS.format(marks=", ".join("?" * len(ids))), ids
            )
            yield ReplayBatch(rows, verdicts)

    async def fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run any read query: for tests and debugging (SQLite only; not part of `Store`)."""
        return await self._fetch(sql, params)

    async def _children(self, table: str, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        if not ids:
            return out
        marks = ", ".join("?" * len(ids))
        db = self._require_db()
        async with db.execute(
            f"SELECT * FROM {table} WHERE request_id IN ({marks}) ORDER BY request_id, position",
            ids,
        ) as cursor:
            names = [d[0] for d in cursor.description]
            async for row in cursor:
                entry = dict(zip(names, row, strict=True))
                out.setdefault(entry.pop("request_id"), []).append(entry)
        return out

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
        return {rid: {"good": bool(good), "at": at, "note": note} for rid, good, at, note in rows}

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


def _grouped(statement_lists: Any) -> Statements:
    """Statements of several writes merged by SQL, in the order each SQL first appears, so a
    batch is one `executemany` per statement (requests before the verdicts that reference them)."""
    merged: dict[str, Rows] = {}
    for statements in statement_lists:
        for sql, rows in statements:
            merged.setdefault(sql, []).extend(rows)
    return list(merged.items())


def _store_error(exc: BaseException) -> StoreError:
    if isinstance(exc, StoreError):
        return exc
    return StoreError(f"a write to the store failed: {type(exc).__name__}: {exc}")


def _with_retry(fn: Callable[[], object], attempts: int = 50) -> None:
    """Run `fn`, retrying while another process holds the lock (switching a new file to WAL
    does not wait on the busy timeout)."""
    for left in range(attempts, 0, -1):
        try:
            fn()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or left == 1:
                raise
            time.sleep(0.05)


def _history_entry(
    row: tuple[Any, ...], verdicts: list[dict[str, Any]], attempts: list[dict[str, Any]]
) -> dict[str, Any]:
    (rid, created, status, model, tier, cost, latency, pt, ct, features, forced_model,
     forced_tier, stream, decision, error_kind, error) = row  # fmt: skip
    return {
        "request_id": rid,
        "created_at": created,
        "status": status,
        "model": model,
        "tier": tier,
        "cost_usd": cost,
        "latency_ms": latency,
        "prompt_tokens": pt,
        "completion_tokens": ct,
        "features": json.loads(features),
        "forced_model": forced_model,
        "forced_tier": forced_tier,
        "stream": bool(stream),
        "decision": json.loads(decision) if decision else None,
        "verdicts": [_verdict_entry(v) for v in verdicts],
        "attempts": [_attempt_entry(a) for a in attempts],
        "error_kind": error_kind,
        "error": error,
    }


def _attempt_entry(a: dict[str, Any]) -> dict[str, Any]:
    a.pop("position", None)
    return {**a, "ok": bool(a["ok"]), "skipped": bool(a["skipped"]), "cached": bool(a["cached"])}


def _verdict_entry(v: dict[str, Any]) -> dict[str, Any]:
    v.pop("position", None)
    return {
        **v,
        "allowed": json.loads(v["allowed"]),
        "denied_models": json.loads(v["denied_models"]),
        "metrics": json.loads(v["metrics"]),
        "stale": bool(v["stale"]),
        "neutral": bool(v["neutral"]),
    }
