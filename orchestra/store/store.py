"""The SQLite store: one writer task batching records, reads for history and spend."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from orchestra.errors import StoreError
from orchestra.spend import day_start, month_start
from orchestra.store.record import (
    RequestRecord,
    attempt_rows,
    ledger_row,
    request_row,
    sample_row,
    verdict_rows,
)
from orchestra.store.schema import migrate
from orchestra.verdict import Verdict

log = logging.getLogger("orchestra.store")

_INSERT_REQUEST = f"INSERT OR REPLACE INTO requests VALUES ({', '.join('?' * 20)})"
_INSERT_VERDICT = (
    "INSERT OR REPLACE INTO verdicts (request_id, position, agent, target, allowed, confidence,"
    " state, reason, metrics, at, stale, neutral, denied_models)"
    f" VALUES ({', '.join('?' * 13)})"
)
_INSERT_ATTEMPT = (
    "INSERT OR REPLACE INTO attempts (request_id, position, model, tier, ok, latency_ms,"
    " error_kind, error, status_code, retry_after_s, retry_in_s, skipped, cached)"
    f" VALUES ({', '.join('?' * 13)})"
)
_INSERT_LEDGER = (
    "INSERT INTO ledger (at, request_id, model, tier, prompt_tokens, completion_tokens, cost_usd)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_SAMPLE = "INSERT INTO samples (agent, at, state, verdict) VALUES (?, ?, ?, ?)"


@dataclass(frozen=True)
class SqlWrite:
    """A statement for the writer to run in its next batch (breaker state, cache entries...)."""

    sql: str
    params: tuple[Any, ...]


_Item = RequestRecord | Verdict | SqlWrite


class Store:
    """An async SQLite store (WAL) with a single writer funnel.

    `record()` and `record_sample()` only enqueue: the writer task turns records into rows and
    commits them in batches, off the request path. `flush()` waits until everything queued so far
    is on disk; `close()` flushes and closes. Reads go through the same connection.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None
        self._queue: asyncio.Queue[_Item | asyncio.Future[None]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    async def open(self) -> Store:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = await aiosqlite.connect(self.path, timeout=10.0)
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute("PRAGMA synchronous=NORMAL")
            await self._db.execute("PRAGMA foreign_keys=ON")
            await migrate(self._db)
        except StoreError:
            await self._close_db()
            raise
        except (sqlite3.Error, OSError) as exc:
            await self._close_db()
            raise StoreError(f"cannot open the store at {self.path}: {exc}") from exc
        self._writer = asyncio.create_task(self._write_forever(), name="orchestra-store-writer")
        return self

    async def close(self) -> None:
        if self._writer is not None:
            await self.flush()
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        await self._close_db()

    async def __aenter__(self) -> Store:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- writes: enqueue only ------------------------------------------------------------------

    def record(self, record: RequestRecord) -> None:
        self._queue.put_nowait(record)

    def record_sample(self, verdict: Verdict) -> None:
        self._queue.put_nowait(verdict)

    def write_later(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        """Queue any statement for the writer (committed with the next batch, in order)."""
        self._queue.put_nowait(SqlWrite(sql, params))

    async def flush(self) -> None:
        """Wait until every record queued before this call is committed."""
        if self._writer is None or self._writer.done():
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(done)
        await done

    async def _write_forever(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            records = [item for item in batch if not isinstance(item, asyncio.Future)]
            if records:
                await self._write_batch(records)
            for item in batch:
                if isinstance(item, asyncio.Future) and not item.done():
                    item.set_result(None)

    async def _write_batch(self, items: list[_Item]) -> None:
        requests, verdicts, attempts, ledger, samples = [], [], [], [], []
        writes: list[SqlWrite] = []
        for item in items:
            try:
                if isinstance(item, SqlWrite):
                    writes.append(item)
                    continue
                if isinstance(item, Verdict):
                    samples.append(sample_row(item))
                    continue
                rows = (request_row(item), verdict_rows(item), attempt_rows(item), ledger_row(item))
            except Exception:  # one bad record must not cost the others, nor the writer
                log.exception("store: cannot serialise a record; it is dropped")
                continue
            requests.append(rows[0])
            verdicts.extend(rows[1])
            attempts.extend(rows[2])
            if rows[3] is not None:
                ledger.append(rows[3])
        db = self._require_db()
        try:
            await db.executemany(_INSERT_REQUEST, requests)
            await db.executemany(_INSERT_VERDICT, verdicts)
            await db.executemany(_INSERT_ATTEMPT, attempts)
            await db.executemany(_INSERT_LEDGER, ledger)
            await db.executemany(_INSERT_SAMPLE, samples)
            for write in writes:
                await db.execute(write.sql, write.params)
            await db.commit()
        except Exception:  # the writer must outlive any one batch
            log.exception("store: failed to write %d records", len(items))
            with contextlib.suppress(Exception):
                await db.rollback()

    # -- reads ---------------------------------------------------------------------------------

    async def spend_totals(self, now: float | None = None) -> tuple[float, float]:
        """(today, this month) in USD, local calendar."""
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
        """Stored requests, newest first, each with its decision, verdicts and attempts."""
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

    async def fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run a read query (after flushing nothing: call `flush()` first to read your writes)."""
        return await self._fetch(sql, params)

    async def _fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        db = self._require_db()
        async with db.execute(sql, params) as cursor:
            return [tuple(r) for r in await cursor.fetchall()]

    def _require_db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError("the store is not open")
        return self._db

    async def _close_db(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None


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
