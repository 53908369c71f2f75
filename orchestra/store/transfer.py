"""`orchestra store migrate`: copy a SQLite history into a PostgreSQL database.

Everything is copied in one PostgreSQL transaction: requests with their details, shared values,
samples, feedback, the ledger, the running sums, breakers (state and events), the response
cache, the models changed while running and the store's settings (its budget zone). Live
reservations are not: stop the processes using the SQLite home first.

Idempotent: the copy records its source in `store_imports` under a fingerprint of the file's
oldest rows, so a second run copies nothing (and says so); rows with a natural key (requests,
shared values, cache entries, breakers) are never duplicated either. A request whose id another
call's record has in the database (a chosen id, used on two homes) is copied under a fresh id,
its feedback and ledger rows with it: a record never replaces, nor hides, another. A source
file at an older schema is migrated first, as Orchestra would on opening it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg

from orchestra.core.errors import StoreUnavailable
from orchestra.core.request import new_request_id
from orchestra.store.postgres_db import MODELS_LOCK, Conn, migrate
from orchestra.store.sqlite import SqliteStore

CHUNK = 5_000

_REQUEST_COLUMNS = (
    "id, created_at, status, model, tier, cost_usd, latency_ms, prompt_tokens,"
    " completion_tokens, prompt_sha256, features, prompt, response, forced_model, forced_tier,"
    " stream, policy, decision, error_kind, error, detail"
)
# table -> (SELECT on SQLite in rowid order, INSERT on PostgreSQL)
_COPIES: dict[str, tuple[str, str]] = {
    "requests": (
        f"SELECT {_REQUEST_COLUMNS} FROM requests ORDER BY rowid",
        f"INSERT INTO requests ({_REQUEST_COLUMNS}) VALUES"
        f" ({', '.join(f'${i}' for i in range(1, 22))}) ON CONFLICT (id) DO NOTHING",
    ),
    "shared": (
        "SELECT key, json FROM shared",
        "INSERT INTO shared (key, json) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
    ),
    "samples": (
        "SELECT agent, at, state, verdict FROM samples ORDER BY id",
        "INSERT INTO samples (agent, at, state, verdict) VALUES ($1, $2, $3, $4)",
    ),
    "feedback": (
        "SELECT request_id, at, good, note FROM feedback ORDER BY id",
        "INSERT INTO feedback (request_id, at, good, note) SELECT $1, $2, $3, $4"
        " WHERE EXISTS (SELECT 1 FROM requests WHERE id = $1)",
    ),
    # A reservation id means nothing in another database: the copied rows have none.
    "ledger": (
        "SELECT at, request_id, model, tier, prompt_tokens, completion_tokens, cost_usd, kind,"
        " estimated FROM ledger ORDER BY id",
        "INSERT INTO ledger (at, request_id, model, tier, prompt_tokens, completion_tokens,"
        " cost_usd, kind, estimated) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    ),
    "spend_day": (
        "SELECT day, model, tier, answers, prompt_tokens, completion_tokens, cost_usd"
        " FROM spend_day",
        "INSERT INTO spend_day (day, model, tier, answers, prompt_tokens, completion_tokens,"
        " cost_usd) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (day, model, tier) DO UPDATE"
        " SET answers = spend_day.answers + excluded.answers,"
        " prompt_tokens = spend_day.prompt_tokens + excluded.prompt_tokens,"
        " completion_tokens = spend_day.completion_tokens + excluded.completion_tokens,"
        " cost_usd = spend_day.cost_usd + excluded.cost_usd",
    ),
    "spend_hour": (
        "SELECT day, hour, cost_usd FROM spend_hour",
        "INSERT INTO spend_hour (day, hour, cost_usd) VALUES ($1, $2, $3) ON CONFLICT (day, hour)"
        " DO UPDATE SET cost_usd = spend_hour.cost_usd + excluded.cost_usd",
    ),
    "breaker_state": (
        "SELECT model, state, failures, opened_at, updated_at FROM breaker_state",
        "INSERT INTO breaker_state (model, state, failures, opened_at, updated_at)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (model) DO UPDATE SET state = excluded.state,"
        " failures = excluded.failures, opened_at = excluded.opened_at,"
        " updated_at = excluded.updated_at"
        " WHERE breaker_state.updated_at < excluded.updated_at",
    ),
    "breaker_events": (
        "SELECT model, at, from_state, to_state, reason FROM breaker_events ORDER BY id",
        "INSERT INTO breaker_events (model, at, from_state, to_state, reason)"
        " VALUES ($1, $2, $3, $4, $5)",
    ),
    "response_cache": (
        "SELECT key, model, tier, text, prompt_tokens, completion_tokens, created_at, expires_at"
        " FROM response_cache",
        "INSERT INTO response_cache (key, model, tier, text, prompt_tokens, completion_tokens,"
        " created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        " ON CONFLICT (key) DO NOTHING",
    ),
    # Models changed while running: each takes the database's next version (in the source's
    # order); one the database changed more recently is kept as it is.
    "models": (
        "SELECT name, spec, updated_at FROM models ORDER BY version",
        "INSERT INTO models (name, spec, version, updated_at)"
        " VALUES ($1, $2, (SELECT COALESCE(MAX(version), 0) + 1 FROM models), $3)"
        " ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, version = excluded.version,"
        " updated_at = excluded.updated_at WHERE models.updated_at < excluded.updated_at",
    ),
    # The store's settings: the budget calendar's zone, unless the database already has one
    # (then the copied running sums keep the days they were counted in).
    "settings": (
        "SELECT key, value FROM settings",
        "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
    ),
}
# Counted by what PostgreSQL inserted (a natural key already there is not copied again).
_KEYED = frozenset({"requests", "shared", "response_cache", "feedback", "models", "settings"})


def fingerprint(db: sqlite3.Connection) -> str | None:
    """The source's identity: its oldest rows, which Orchestra never rewrites (None: empty)."""
    parts = []
    for sql in (
        "SELECT id, created_at FROM requests ORDER BY rowid LIMIT 1",
        "SELECT id, at, request_id FROM ledger ORDER BY id LIMIT 1",
        "SELECT id, agent, at FROM samples ORDER BY id LIMIT 1",
        "SELECT day, model, tier FROM spend_day ORDER BY day, model, tier LIMIT 1",
        "SELECT id, model, at FROM breaker_events ORDER BY id LIMIT 1",
    ):
        parts.append(db.execute(sql).fetchone())
    if not any(parts):
        return None
    return "sqlite:" + hashlib.blake2b(repr(parts).encode(), digest_size=16).hexdigest()


def _chunks(db: sqlite3.Connection, sql: str) -> Iterator[list[tuple[Any, ...]]]:
    cursor = db.execute(sql)
    while rows := cursor.fetchmany(CHUNK):
        yield rows


async def copy_sqlite(source: Path, url: str) -> dict[str, Any]:
    """Copy the SQLite store at `source` into the PostgreSQL database at `url` (migrated first);
    returns the rows copied per table and whether the source had been copied before."""
    if not await asyncio.to_thread(source.is_file):
        raise StoreUnavailable(f"no SQLite store at {source}")
    async with SqliteStore(source):  # brings an older file to the current schema
        pass
    db = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        conn = await asyncpg.connect(url, timeout=10)
    except (OSError, asyncpg.PostgresError, ValueError) as exc:
        db.close()
        raise StoreUnavailable(f"cannot reach the database: {exc}") from exc
    try:
        await migrate(conn)
        return await _copy(db, conn)
    finally:
        await conn.close()
        db.close()


async def _copy(db: sqlite3.Connection, conn: Conn) -> dict[str, Any]:
    counts = dict.fromkeys(_COPIES, 0)
    source = fingerprint(db)
    if source is None:
        return {"copied": counts, "already_copied": False, "source": None}
    async with conn.transaction():
        claimed = await conn.fetchval(
            "INSERT INTO store_imports (source, at, counts) VALUES ($1, $2, '{}')"
            " ON CONFLICT (source) DO NOTHING RETURNING source",
            source,
            time.time(),
        )
        if claimed is None:
            return {"copied": counts, "already_copied": True, "source": source}
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MODELS_LOCK)  # versions: ours
        renames: dict[str, str] = {}  # a request id another call's record has -> its new one
        for table, (select, insert) in _COPIES.items():
            for rows in _chunks(db, select):
                if table == "requests":
                    counts[table] += await _insert_requests(conn, insert, rows, renames)
                    continue
                rows = _renamed(table, rows, renames)
                if table in _KEYED:
                    counts[table] += await _insert_counting(conn, insert, rows)
                else:
                    await conn.executemany(insert, rows)
                    counts[table] += len(rows)
        await conn.execute(
            "UPDATE store_imports SET counts = $2 WHERE source = $1", source, json.dumps(counts)
        )
    return {"copied": counts, "already_copied": False, "source": source}


async def _insert_requests(
    conn: Conn, insert: str, rows: list[tuple[Any, ...]], renames: dict[str, str]
) -> int:
    """Insert request rows, counting those that went in. A record already there (the same
    start and latency: this very call, copied before) is not copied again; another call's
    record under the same id is kept, and this one is copied beside it under a fresh id
    (`renames`, for its feedback and ledger rows)."""
    statement = await conn.prepare(insert + " RETURNING 1")
    done = 0
    for row in rows:
        if await statement.fetchval(*row) is not None:
            done += 1
            continue
        rid, at, latency = row[0], row[1], row[_LATENCY_AT]
        there = await conn.fetchrow(
            "SELECT created_at, latency_ms FROM requests WHERE id = $1", rid
        )
        if there is not None and (there[0], there[1]) == (at, latency):
            continue
        renames[rid] = new_request_id()
        done += int(await statement.fetchval(renames[rid], *row[1:]) is not None)
    return done


_LATENCY_AT = 6  # a request row's latency_ms (see `_REQUEST_COLUMNS`)
_REQUEST_ID_AT = {"feedback": 0, "ledger": 1}  # where a row names its request


def _renamed(
    table: str, rows: list[tuple[Any, ...]], renames: dict[str, str]
) -> list[tuple[Any, ...]]:
    """Rows of `table` naming a renamed request, under its new id."""
    at = _REQUEST_ID_AT.get(table)
    if at is None or not renames:
        return rows
    return [(*r[:at], renames[r[at]], *r[at + 1 :]) if r[at] in renames else r for r in rows]


async def _insert_counting(conn: Conn, insert: str, rows: list[tuple[Any, ...]]) -> int:
    """Insert rows one statement each (in one pipeline), counting those that went in."""
    statement = await conn.prepare(insert + " RETURNING 1")
    done = 0
    for row in rows:
        done += int(await statement.fetchval(*row) is not None)
    return done
