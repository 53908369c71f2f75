"""The store's budget calendar: one time zone (an IANA name) kept in the database, so that every
process and host sharing the store counts the same days, whatever its machine's zone.

The first process to open a store records its zone (the config's `[budget] timezone`, else its
machine's) with an insert-if-absent, so processes opening a new store together agree on the first
one's. A process whose config names no zone adopts the store's; one that names another is refused
(`ConfigError`). `orchestra store timezone ZONE` changes it deliberately.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from orchestra.core.errors import ConfigError
from orchestra.spend.calendar import same_days

if TYPE_CHECKING:  # SQLite users never import the PostgreSQL driver
    from orchestra.store.postgres_db import Conn

KEY = "budget_timezone"

_SQLITE_ADD = "INSERT OR IGNORE INTO settings (key, value) VALUES (?, ?)"
_SQLITE_GET = "SELECT value FROM settings WHERE key = ?"
_SQLITE_SET = (
    "INSERT INTO settings (key, value) VALUES (?, ?)"
    " ON CONFLICT(key) DO UPDATE SET value = excluded.value"
)
_PG_ADD = "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING"
_PG_GET = "SELECT value FROM settings WHERE key = $1"
_PG_SET = (
    "INSERT INTO settings (key, value) VALUES ($1, $2)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)


def agreed(stored: str, wanted: str | None, where: str) -> str:
    """The zone to count in: the store's, unless the config names another (`ConfigError`)."""
    if wanted is not None and not same_days(wanted, stored):
        raise ConfigError(
            f"[budget] timezone is {wanted!r} but the store at {where} counts its budget in"
            f" {stored!r}: every process sharing a store must count the same days. Remove"
            f" `timezone` from [budget] to use the store's, or run `orchestra store timezone"
            f" {wanted}` to change the store's (with the other processes stopped)"
        )
    return stored


def sqlite_zone(conn: sqlite3.Connection, first: str) -> str:
    """The store's zone, recording `first` if it has none yet (one write transaction)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_SQLITE_ADD, (KEY, first))
        (zone,) = conn.execute(_SQLITE_GET, (KEY,)).fetchone()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return str(zone)


def sqlite_set_zone(conn: sqlite3.Connection, zone: str) -> None:
    conn.execute(_SQLITE_SET, (KEY, zone))  # autocommit: one statement, its own transaction


async def pg_zone(conn: Conn, first: str) -> str:
    """The store's zone, recording `first` if it has none yet. A host inserting at the same time
    waits for the other's commit, then reads its row (READ COMMITTED: each statement sees what
    was committed before it began)."""
    async with conn.transaction():
        await conn.execute(_PG_ADD, KEY, first)
        return str(await conn.fetchval(_PG_GET, KEY))


async def pg_set_zone(conn: Conn, zone: str) -> None:
    await conn.execute(_PG_SET, KEY, zone)
