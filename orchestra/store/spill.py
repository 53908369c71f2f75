"""The spill file: where a PostgreSQL store keeps writes while the database is unreachable.

A small SQLite file in ORCHESTRA_HOME (`spill.db`, WAL). Each entry is one write as the
PostgreSQL writer would have committed it (its rows by statement, its charges, its releases),
as JSON. Entries go back to PostgreSQL, oldest first, when it answers again, and are deleted
once committed there. Every process on the host shares the file; a drain is serialised across
processes by an advisory lock on the database, and a record already there is skipped (as is an
entry with no record whose key the database keeps: a dead offline hold's lost charge), so an
entry is applied once even if a process dies between the commit and the delete.

The file is capped (`max_bytes`): past it, a record is refused (its request gets `NotRecorded`:
the answer is shown, not kept) and the best-effort writes (samples, breakers) are dropped.
The last totals read from the database (the "known" shared spend) are kept here too, so a
process started during an outage still knows them.

It is also the host's offline ledger (see `orchestra.store.offline_ledger`): the holds granted
while the database is unreachable (`offline_holds`: carried into the database as reservations
when it is back, by the first process to drain the file), the reservations processes had in
the database but not in the known totals when they lost it (`carried`), and the money of each
entry (`pending.usd`). A drained entry is marked (`drained_at`), not deleted, until known totals
read after its drain are kept: until then it still counts, so that "known totals + what the
file holds" never misses spend, whichever process drains and whichever reads.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from orchestra.core.errors import StoreError
from orchestra.store.sqlite_writer import retry_locked
from orchestra.store.sync import DEFAULT_SYNC, Sync, set_sync

T = TypeVar("T")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS pending (id INTEGER PRIMARY KEY, kind TEXT NOT NULL,"
    " size INTEGER NOT NULL, payload TEXT NOT NULL, failed INTEGER NOT NULL DEFAULT 0,"
    " usd REAL NOT NULL DEFAULT 0, drained_at REAL)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # AUTOINCREMENT: an id is never reused, so a late charge never settles another's hold.
    "CREATE TABLE IF NOT EXISTS offline_holds (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " owner TEXT NOT NULL, request_id TEXT, model TEXT NOT NULL, tier TEXT NOT NULL,"
    " usd REAL NOT NULL, expires_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS carried (owner TEXT PRIMARY KEY, usd REAL NOT NULL,"
    " at REAL NOT NULL)",
)
# Columns later versions added to `pending` (a file of an older Orchestra gets them at open).
_ADDED = {"usd": "REAL NOT NULL DEFAULT 0", "drained_at": "REAL"}
# Running sums of `pending`, kept by triggers in the transactions that change it, so that
# neither a spilled write (the cap) nor an offline reservation (what the host spent) sums the
# whole file: an outage's thousandth write costs what its first did. `waiting_bytes`: the size
# of the entries not yet drained; `usd`: what every entry kept charged.
_SUMS = (
    "CREATE TABLE IF NOT EXISTS pending_sums (one INTEGER PRIMARY KEY CHECK (one = 1),"
    " waiting_bytes INTEGER NOT NULL, usd REAL NOT NULL)",
    "CREATE TRIGGER IF NOT EXISTS pending_added AFTER INSERT ON pending BEGIN"
    " UPDATE pending_sums SET usd = usd + new.usd, waiting_bytes = waiting_bytes"
    " + CASE WHEN new.drained_at IS NULL THEN new.size ELSE 0 END; END",
    "CREATE TRIGGER IF NOT EXISTS pending_deleted AFTER DELETE ON pending BEGIN"
    " UPDATE pending_sums SET usd = usd - old.usd, waiting_bytes = waiting_bytes"
    " - CASE WHEN old.drained_at IS NULL THEN old.size ELSE 0 END; END",
    "CREATE TRIGGER IF NOT EXISTS pending_changed AFTER UPDATE OF usd, size, drained_at"
    " ON pending BEGIN UPDATE pending_sums SET usd = usd - old.usd + new.usd,"
    " waiting_bytes = waiting_bytes - CASE WHEN old.drained_at IS NULL THEN old.size ELSE 0 END"
    " + CASE WHEN new.drained_at IS NULL THEN new.size ELSE 0 END; END",
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


def money(payload: dict[str, Any]) -> tuple[float, list[int]]:
    """What an entry's charges cost, and the offline holds (negative ids) it settles."""
    usd, holds = 0.0, [-int(r) for r in payload.get("releases", ()) if int(r) < 0]
    for _, charge, _ in payload.get("charges", ()):
        usd += float(charge.get("cost_usd") or 0.0)
        hold = charge.get("hold_id")
        if hold is not None and int(hold) < 0:
            holds.append(-int(hold))
    return usd, holds


def insert(db: sqlite3.Connection, kind: str, text: str, payload: dict[str, Any]) -> None:
    """One entry, inside the caller's transaction; the offline holds it settles are gone."""
    usd, holds = money(payload)
    db.execute(
        "INSERT INTO pending (kind, size, payload, usd) VALUES (?, ?, ?, ?)",
        (kind, len(text), text, usd),
    )
    if holds:
        db.executemany("DELETE FROM offline_holds WHERE id = ?", [(h,) for h in holds])


def _upgrade(db: sqlite3.Connection) -> None:
    """Add the columns an older Orchestra's file lacks; price the entries already there."""
    have = {row[1] for row in db.execute("PRAGMA table_info(pending)")}
    if set(_ADDED) <= have:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        have = {row[1] for row in db.execute("PRAGMA table_info(pending)")}
        for column, decl in _ADDED.items():
            if column not in have:
                db.execute(f"ALTER TABLE pending ADD COLUMN {column} {decl}")
        if "usd" not in have:
            for i, text in db.execute("SELECT id, payload FROM pending").fetchall():
                db.execute("UPDATE pending SET usd = ? WHERE id = ?", (money(loads(text))[0], i))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _keep_sums(db: sqlite3.Connection) -> None:
    """Create the running sums (and their triggers) once, from what the file holds then: in one
    write transaction, so that no entry lands between the sum and its trigger."""
    if db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = 'pending_changed'"
    ).fetchone():
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        for statement in _SUMS:
            db.execute(statement)
        db.execute(
            "INSERT OR IGNORE INTO pending_sums (one, waiting_bytes, usd) SELECT 1,"
            " COALESCE(SUM(CASE WHEN drained_at IS NULL THEN size ELSE 0 END), 0),"
            " COALESCE(SUM(usd), 0) FROM pending"
        )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def sums(db: sqlite3.Connection) -> tuple[int, float]:
    """(bytes of the entries not yet drained, what every entry kept charged), read, not summed."""
    (waiting, usd) = db.execute("SELECT waiting_bytes, usd FROM pending_sums").fetchone()
    return int(waiting), float(usd)


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
            _upgrade(conn)
            _keep_sums(conn)
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

    def transaction(self, fn: Callable[[sqlite3.Connection], T], *, synced: bool = True) -> T:
        """`fn` inside one write transaction (`BEGIN IMMEDIATE`: one at a time on the host).
        `synced=False`: its commit is not synced to the disk whatever `sync` says (it survives
        the process, not a power cut); the connection's other commits are, as `sync` says."""
        with self._lock:
            db = self._db()
            if not synced:
                set_sync(db, "normal")
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    out = fn(db)
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
            finally:
                if not synced:
                    set_sync(db, self.sync)
        return out

    def host(self) -> str:
        """This file's id: the host's, as the database counts the hosts sharing a budget."""
        with self._lock:
            db = self._db()
            db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('host', ?)",
                (json.dumps(uuid.uuid4().hex[:16]),),
            )
            (value,) = db.execute("SELECT value FROM meta WHERE key = 'host'").fetchone()
        return str(json.loads(value))

    def append(
        self, entries: list[tuple[str, dict[str, Any]]], essential: list[bool]
    ) -> list[bool]:
        """Keep entries (kind, payload) in one transaction; which were kept. Past the cap an
        essential entry raises `SpillFull` (nothing of the call is kept), others are dropped."""
        texts = [(kind, dumps(p), p) for kind, p in entries]
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                used, _ = sums(db)
                kept = []
                for (kind, text, payload), must in zip(texts, essential, strict=True):
                    if used + len(text) > self.max_bytes:
                        if must:
                            raise SpillFull(
                                f"the spill file {self.path} is full ({self.max_bytes} bytes) "
                                "while the database is unreachable"
                            )
                        kept.append(False)
                        continue
                    insert(db, kind, text, payload)
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
                    "SELECT id, kind, payload FROM pending WHERE failed = 0"
                    " AND drained_at IS NULL ORDER BY id LIMIT ?",
                    (limit,),
                )
                .fetchall()
            )
        return [(i, kind, loads(text)) for i, kind, text in rows]

    def drained(self, ids: list[int], at: float) -> None:
        """Entries now committed in the database (at `at`, after their commit): marked, and
        deleted once known totals read after `at` are kept (see `keep_known`)."""
        self.transaction(
            lambda db: db.executemany(
                "UPDATE pending SET drained_at = ? WHERE id = ?", [(at, i) for i in ids]
            )
        )

    def unsettled(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]], float]:
        """The known totals kept here, every entry they may not count (not drained before
        them), and what the host holds offline and carried: one consistent view."""
        with self._lock:
            db = self._db()
            known = known_of(db)
            since = float("-inf") if known is None else float(known["at"])
            rows = db.execute(
                "SELECT payload FROM pending WHERE drained_at IS NULL OR drained_at >= ?",
                (since,),
            ).fetchall()
            (held,) = db.execute(
                "SELECT (SELECT COALESCE(SUM(usd), 0) FROM offline_holds)"
                " + (SELECT COALESCE(SUM(usd), 0) FROM carried)"
            ).fetchone()
        return known, [loads(text) for (text,) in rows], float(held)

    def keep_known(self, known: dict[str, Any], *, synced: bool = True) -> bool:
        """Keep totals read from the database (see `keep_known`); the fields `known` lacks stay
        as kept. `synced=False`: not synced to the disk (at every reservation: the processes of
        the host see it at once; a power cut, which ends them all, loses nothing else)."""

        def keep(db: sqlite3.Connection) -> bool:
            return keep_known(db, {**(known_of(db) or {}), **known})

        return self.transaction(keep, synced=synced)

    def settle_offline(self, hold_ids: list[int]) -> set[int]:
        """Offline holds settled in the database itself (their call ended after it was back);
        returns those the file still had (the others were carried into the database)."""

        def drop(db: sqlite3.Connection) -> set[int]:
            gone = set()
            for h in {h for h in hold_ids if h < 0}:
                if db.execute("DELETE FROM offline_holds WHERE id = ?", (-h,)).rowcount:
                    gone.add(h)
            return gone

        return self.transaction(drop)

    def offline_holds(self) -> list[tuple[int, str | None, str, str, float, float]]:
        """Every hold granted offline on the host, live or run out: (id, request id, model,
        tier, amount, lease end)."""
        with self._lock:
            rows = (
                self._db()
                .execute(
                    "SELECT id, request_id, model, tier, usd, expires_at FROM offline_holds"
                    " ORDER BY id"
                )
                .fetchall()
            )
        return [(int(i), r, m, t, float(u), float(e)) for i, r, m, t, u, e in rows]

    def carried_holds(self, ids: list[int], owner: str, at: float) -> None:
        """Offline holds the database now holds (reservations since `at`): they leave the file,
        their amount counted as `carried` until known totals read after `at` are kept (they are
        in those), so that the database lost again before that misses none of it."""

        def move(db: sqlite3.Connection) -> None:
            marks = ", ".join("?" * len(ids))
            (usd,) = db.execute(
                f"SELECT COALESCE(SUM(usd), 0) FROM offline_holds WHERE id IN ({marks})", ids
            ).fetchone()
            db.execute(f"DELETE FROM offline_holds WHERE id IN ({marks})", ids)
            if usd:
                db.execute(
                    "INSERT INTO carried (owner, usd, at) VALUES (?, ?, ?) ON CONFLICT (owner)"
                    " DO UPDATE SET usd = carried.usd + excluded.usd, at = excluded.at",
                    (owner, float(usd), at),
                )

        if ids:
            self.transaction(move)

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
                    " COALESCE(SUM(failed), 0) FROM pending WHERE drained_at IS NULL"
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


def keep_known(db: sqlite3.Connection, known: dict[str, Any]) -> bool:
    """Keep totals read from the database (`known["at"]`: when the read began) unless fresher
    ones are kept; then entries drained before them, and reservations carried from before them,
    are in them: forgotten here. False when fresher ones were there. In the caller's
    transaction."""
    at = float(known["at"])
    if _known_at(db) >= at:
        return False
    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('known', ?)", (json.dumps(known),))
    db.execute("DELETE FROM pending WHERE drained_at < ?", (at,))
    db.execute("DELETE FROM carried WHERE at < ?", (at,))
    return True


def known_of(db: sqlite3.Connection) -> dict[str, Any] | None:
    row = db.execute("SELECT value FROM meta WHERE key = 'known'").fetchone()
    value = None if row is None else json.loads(row[0])
    return value if isinstance(value, dict) else None


def _known_at(db: sqlite3.Connection) -> float:
    known = known_of(db)
    return float("-inf") if known is None else float(known["at"])
