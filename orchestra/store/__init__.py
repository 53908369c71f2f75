"""Persistence: the only part of Orchestra that holds SQL.

`Store` is the interface every backend implements; `SqliteStore` is the embedded default and
`PostgresStore` the shared one for many machines. `open_store` picks the backend for a location.
"""

from __future__ import annotations

from pathlib import Path

from orchestra.store.base import ReplayBatch, Store
from orchestra.store.postgres_options import PostgresOptions, Timeouts, masked
from orchestra.store.record import RequestRecord
from orchestra.store.sqlite import SqliteStore
from orchestra.store.sync import DEFAULT_SYNC, Sync

SPILL_NAME = "spill.db"


def is_url(location: str | Path) -> bool:
    """True for a PostgreSQL URL (`postgresql://...` or `postgres://...`)."""
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def open_store(
    location: str | Path,
    timezone: str | None = None,
    *,
    home: Path | None = None,
    postgres: PostgresOptions | None = None,
    sync: Sync = DEFAULT_SYNC,
) -> Store:
    """A store (not yet opened): PostgreSQL for a `postgresql://` URL, else a SQLite file path.
    `timezone` is the budget calendar's; `home` holds PostgreSQL's spill file (default: the
    data directory); `postgres` overrides its pool, timeouts and spill cap; `sync` is how a
    SQLite commit (or the spill file's) reaches the disk (`orchestra.store.sync`)."""
    if is_url(location):
        # Imported here: SQLite users never load the PostgreSQL driver.
        from orchestra.core.paths import data_dir
        from orchestra.store.postgres import PostgresStore

        options = postgres or PostgresOptions(
            spill_path=(home or data_dir()) / SPILL_NAME, spill_sync=sync
        )
        return PostgresStore(str(location), options, timezone=timezone)
    return SqliteStore(location, timezone=timezone, sync=sync)


__all__ = [
    "PostgresOptions",
    "ReplayBatch",
    "RequestRecord",
    "SqliteStore",
    "Store",
    "Sync",
    "Timeouts",
    "is_url",
    "masked",
    "open_store",
]
