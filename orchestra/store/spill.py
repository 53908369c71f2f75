"""The spill file: where a PostgreSQL store keeps writes while the database is unreachable.

A small SQLite file in ORCHESTRA_HOME (`spill.db`, WAL). Each entry is one write as the
PostgreSQL writer would have committed it (its rows by statement, its charges, its releases),
as JSON. Entries go back to PostgreSQL, oldest first, when it answers again, and are deleted
once committed there. Every process on the host shares the file; a drain is serialised across
processes by an advisory lock on the database, and a record already there is skipped, so an
entry is applied once even if a process dies between the commit and the delete.

The file is capped (`max_bytes`): past it, a record is refused (its request gets `NotRecorded`:
the answer is shown, not kept) and the best-effort writes (samples, breakers) are dropped.
The last totals read from the database (the "known" shared spend) are kept here too, so a
process started during an outage still knows them.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any, BinaryIO

from orchestra.core.errors import StoreError
from orchestra.store.sqlite_writer import retry_locked
from orchestra.store.sync import DEFAULT_SYNC, Sync, set_sync

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS pending (id INTEGER PRIMARY KEY, kind TEXT NOT NULL,"
    " size INTEGER NOT NULL, payload TEXT NOT NULL, failed INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


class SpillFull(StoreError):
    """The spill file holds its maximum: nothing more is kept until the database is back."""


def _encode(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$b": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$b"}:
            return base64.b64decode(value["$b"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def dumps(payload: dict[str, Any]) -> str:
    return json.dumps(_encode(payload), separators=(",", ":"), ensure_ascii=False)


def loads(text: str) -> dict[str, Any]:
    value: dict[str, Any] = _decode(json.loads(text))
    return value


class Spill:
    """The spill file; every method blocks (call it from a worker thread)."""

    def __init__(self, path: Path, max_bytes: int, sync: Sync = DEFAULT_SYNC) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.sync = sync
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._drainer: BinaryIO | None = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            # Processes opening a new file together: switching it to WAL does not wait.
            retry_locked(lambda: conn.execute("PRAGMA journal_mode=WAL"))
            set_sync(conn, self.sync)
            for statement in _SCHEMA:
                conn.execute(statement)
            self._conn = conn
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        self.unlock()

    def lock(self) -> bool:
        """Take the right to drain (one process per host at a time); False if another has it.
        A lock file beside the spill (flock: released by the system if its process dies)."""
        if self._drainer is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path.with_name(self.path.name + ".drain"), "a+b")  # noqa: SIM115
        try:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # no flock (Windows): the database's drain lock still orders drains
            pass
        except OSError:
            handle.close()
            return False
        self._drainer = handle
        return True

    def unlock(self) -> None:
        handle, self._drainer = self._drainer, None
        if handle is not None:
            handle.close()  # closing releases the flock

    def append(
        self, entries: list[tuple[str, dict[str, Any]]], essential: list[bool]
    ) -> list[bool]:
        """Keep entries (kind, payload) in one transaction; which were kept. Past the cap an
        essential entry raises `SpillFull` (nothing of the call is kept), others are dropped."""
        texts = [(kind, dumps(p)) for kind, p in entries]
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                (used,) = db.execute("SELECT COALESCE(SUM(size), 0) FROM pending").fetchone()
                kept = []
                for (kind, text), must in zip(texts, essential, strict=True):
                    if used + len(text) > self.max_bytes:
                        if must:
                            raise SpillFull(
                                f"the spill file {self.path} is full ({self.max_bytes} bytes) "
                                "while the database is unreachable"
                            )
                        kept.append(False)
                        continue
                    db.execute(
                        "INSERT INTO pending (kind, size, payload) VALUES (?, ?, ?)",
                        (kind, len(text), text),
                    )
                    used += len(text)
                    kept.append(True)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return kept

    def take(self, limit: int) -> list[tuple[int, str, dict[str, Any]]]:
        """The oldest entries not yet applied (or quarantined)."""
        with self._lock:
            rows = (
                self._db()
                .execute(
                    "SELECT id, kind, payload FROM pending WHERE failed = 0 ORDER BY id LIMIT ?",
                    (limit,),
                )
                .fetchall()
            )
        return [(i, kind, loads(text)) for i, kind, text in rows]

    def delete(self, ids: list[int]) -> None:
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            db.executemany("DELETE FROM pending WHERE id = ?", [(i,) for i in ids])
            db.execute("COMMIT")

    def quarantine(self, ids: list[int]) -> None:
        """Keep entries the database refused (bad data, not an outage) without retrying them."""
        with self._lock:
            db = self._db()
            db.executemany("UPDATE pending SET failed = 1 WHERE id = ?", [(i,) for i in ids])

    def counts(self) -> tuple[int, int, int]:
        """(entries waiting, bytes they take, entries quarantined)."""
        if not self.path.exists():
            return 0, 0, 0
        with self._lock:
            waiting, size, failed = (
                self._db()
                .execute(
                    "SELECT COALESCE(SUM(failed = 0), 0), COALESCE(SUM(size), 0),"
                    " COALESCE(SUM(failed), 0) FROM pending"
                )
                .fetchone()
            )
        return int(waiting), int(size), int(failed)

    def get(self, key: str) -> Any:
        if not self.path.exists():
            return None
        with self._lock:
            row = self._db().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._db().execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value))
            )
