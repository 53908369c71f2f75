"""Persistence: the only part of Orchestra that holds SQL.

`Store` is the interface every backend implements; `SqliteStore` is the embedded default.
`open_store` picks the backend for a location.
"""

from __future__ import annotations

from pathlib import Path

from orchestra.store.base import ReplayBatch, Store
from orchestra.store.record import RequestRecord
from orchestra.store.sqlite import SqliteStore


def open_store(location: str | Path, timezone: str | None = None) -> Store:
    """A store (not yet opened) for a SQLite file path; `timezone` is the budget calendar's."""
    return SqliteStore(location, timezone=timezone)


__all__ = ["ReplayBatch", "RequestRecord", "SqliteStore", "Store", "open_store"]
