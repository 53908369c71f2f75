"""How far a SQLite commit goes before it counts as done (`[store] sync`)."""

from __future__ import annotations

import sqlite3
from typing import Literal

Sync = Literal["full", "normal"]
""""full": each commit (a group of writes) is synced to the disk before anyone is told it is
done: it survives a power cut. "normal": a commit is handed to the operating system and synced
at the next checkpoint: it survives the process (a crash, `kill -9`), not a power cut."""

DEFAULT_SYNC: Sync = "full"


def set_sync(conn: sqlite3.Connection, sync: Sync) -> None:
    """Set a WAL connection's `synchronous` level for `sync`."""
    if sync not in ("full", "normal"):
        raise ValueError(f"sync must be 'full' or 'normal', not {sync!r}")
    conn.execute(f"PRAGMA synchronous={sync.upper()}")
