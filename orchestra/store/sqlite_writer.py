"""The SQLite store's single writer: a thread, its inbox, one connection, group commit.

Everything queued while a batch is being written goes into the next batch: one `BEGIN IMMEDIATE`
transaction on the writer's own thread, then one wake-up of the event loop to tell every waiter.
So under load many records share one commit, and alone a record waits for one. A batch that
fails is retried one write at a time, so one bad write costs no other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orchestra.store.sqlite_ledger as sqlite_ledger
from orchestra.core.errors import StoreError
from orchestra.spend.calendar import Calendar
from orchestra.spend.ledger import Ask, SpendTotals
from orchestra.store.record import RENEWALS
from orchestra.store.schema import migrate
from orchestra.store.sync import DEFAULT_SYNC, Sync, set_sync
from orchestra.store.write_outcomes import settle

log = logging.getLogger("orchestra.store")

Rows = list[tuple[Any, ...]]
Statements = list[tuple[str, Rows]]
Apply = Callable[[sqlite3.Connection], object]


@dataclass(slots=True)
class Write:
    """One unit of the queue. `make` gives statements that are merged with the batch's others
    (one `executemany` per statement); `apply` runs in order after them, for writes that decide
    as they go; `ask` is a budget reservation. A write with none of them is a flush marker.
    `money` says the write moves money (the spend totals are read again after the commit)."""

    make: Callable[[], Statements] | None = None
    apply: Apply | None = None
    ask: Ask | None = None
    call: Callable[[], object] | None = None  # run alone, outside any transaction (reads)
    money: bool = False
    # A record's: its statements under a fresh id, when another call's record has its id.
    renew: Callable[[Statements], Statements] | None = None
    done: asyncio.Future[Any] | None = None
    quiet: bool = False  # a failure is logged, not kept for the next flush to raise
    result: object = None
    error: BaseException | None = field(default=None, repr=False)

    @property
    def marker(self) -> bool:
        return self.make is None and self.apply is None and self.ask is None and self.call is None


class Writer:
    """Owns the write connection and its thread; `submit` queues a write and, if asked, returns
    a future resolved once it is committed.

    `on_totals` receives the spend totals, read after commits that moved money (at most every
    `TOTALS_EVERY_S`: the budget itself is enforced inside the transactions, not by them).
    `on_failure` is called (on the writer's thread) after a batch in which a write failed.
    `sync` says whether a commit is synced to the disk before its waiters hear of it.
    """

    TOTALS_EVERY_S = 0.2

    def __init__(
        self,
        path: Path,
        calendar: Calendar,
        on_totals: Callable[[SpendTotals], None],
        on_failure: Callable[[], None] = lambda: None,
        sync: Sync = DEFAULT_SYNC,
    ) -> None:
        self.path = path
        self.sync = sync
        self.calendar = calendar
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self._on_totals = on_totals
        self._on_failure = on_failure
        self._conn: sqlite3.Connection | None = None
        self._inbox: queue.SimpleQueue[Write | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._unreported: StoreError | None = None
        self._totals_at = 0.0

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._serve, name="orchestra-store-writer", daemon=True
        )
        self._thread.start()
        try:
            await self.run(self._connect)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if self._conn is not None:
            await self._flush_queue()
        self._inbox.put(None)  # the thread closes the connection and ends
        assert self._stopped is not None
        await self._stopped
        thread.join()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._conn is not None

    def _connect(self) -> None:
        # isolation_level=None: transactions are ours (BEGIN IMMEDIATE), never implicit.
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            retry_locked(lambda: conn.execute("PRAGMA journal_mode=WAL"))
            set_sync(conn, self.sync)
            # Checkpoints run beside the writer (see SqliteStore), so no commit waits on one.
            conn.execute("PRAGMA wal_autocheckpoint=0")
            conn.execute("PRAGMA foreign_keys=ON")
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def run(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the writer's thread (where the connection lives), between batches."""
        if self._thread is None:
            raise StoreError("the store is not open")
        write = Write(call=fn, done=asyncio.get_running_loop().create_future())
        self._inbox.put(write)
        assert write.done is not None
        return await write.done

    # -- the queue -------------------------------------------------------------------------------

    def submit(self, write: Write, *, wait: bool) -> asyncio.Future[Any] | None:
        if not self.running:
            raise StoreError("the store is not open")
        if wait:
            write.done = asyncio.get_running_loop().create_future()
        self._inbox.put(write)
        return write.done

    async def flush(self) -> None:
        if self.running:
            await self._flush_queue()

    async def _flush_queue(self) -> None:
        marker = Write(done=asyncio.get_running_loop().create_future())
        self._inbox.put(marker)
        assert marker.done is not None
        await marker.done

    def _serve(self) -> None:
        """(Writer thread) Take everything queued, commit it as one batch, tell the loop."""
        while True:
            first = self._inbox.get()
            batch = [first]
            while not self._inbox.empty():
                batch.append(self._inbox.get_nowait())
            stopping = any(w is None for w in batch)
            writes = [w for w in batch if w is not None]
            totals = self._process(writes)
            assert self._loop is not None
            if writes or totals is not None:
                # A closed loop (RuntimeError) has nobody waiting any more.
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._settle, writes, totals)
            if stopping:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                with contextlib.suppress(RuntimeError):
                    if self._stopped is not None:
                        self._loop.call_soon_threadsafe(_resolve, self._stopped)
                return

    def _process(self, batch: list[Write]) -> SpendTotals | None:
        """(Writer thread) The batch's calls, then its writes in one transaction."""
        for w in batch:
            if w.call is not None:
                try:
                    w.result = w.call()
                except BaseException as exc:
                    w.error = exc
        writes = [w for w in batch if not w.marker and w.call is None]
        if not writes:
            return None
        try:
            return self._commit(writes)
        except Exception as exc:  # the writer must outlive any one batch
            for w in writes:
                w.error = w.error or exc
            return None
        finally:
            if any(w.error is not None for w in writes):
                self._on_failure()

    def _settle(self, batch: list[Write], totals: SpendTotals | None) -> None:
        """(Event loop) Pass on the totals, answer the calls (their errors as raised), then
        settle the writes (see `orchestra.store.write_outcomes`)."""
        if totals is not None:
            self._on_totals(totals)
        for w in batch:
            if w.call is not None and w.done is not None and not w.done.done():
                if w.error is None:
                    w.done.set_result(w.result)
                else:
                    w.done.set_exception(w.error)
        self._unreported = settle([w for w in batch if w.call is None], self._unreported)

    # -- the writer thread -----------------------------------------------------------------------

    def _commit(self, writes: list[Write]) -> SpendTotals | None:
        """Write a batch in one transaction (or, if it fails, each write in its own); the spend
        totals after it when it moved money."""
        made: list[tuple[Write, Statements]] = []
        for w in writes:
            try:
                made.append((w, w.make() if w.make is not None else []))
            except Exception as exc:  # one bad record must not cost the others
                log.exception("store: cannot serialise a write; it is dropped")
                w.error = exc
        if not made:
            return None
        try:
            self._transaction(made)
        except sqlite3.Error as exc:
            if len(made) == 1 and not id_taken(exc):
                made[0][0].error = exc
            else:
                for w, statements in made:
                    self._alone(w, statements)
        now = time.time()
        if now - self._totals_at < self.TOTALS_EVERY_S:
            return None
        if not any(w.money and w.error is None for w, _ in made):
            return None
        self._totals_at = now
        return sqlite_ledger.totals(self._require_conn(), self.calendar, now)

    def _alone(self, w: Write, statements: Statements) -> None:
        """One write in its own transaction; a record whose id another call's record has is
        written under a fresh one (never over it)."""
        for _ in range(RENEWALS + 1):
            try:
                self._transaction([(w, statements)])
                w.error = None
                return
            except sqlite3.Error as exc:
                w.error = exc
                if w.renew is None or not id_taken(exc):
                    return
                statements = w.renew(statements)
        log.error("store: a record found its id taken %d times; it is not written", RENEWALS)

    def _transaction(self, made: Sequence[tuple[Write, Statements]]) -> None:
        conn = self._require_conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, rows in _grouped(s for _, s in made):
                conn.executemany(sql, rows)
            self._in_order(conn, [w for w, _ in made])
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _in_order(self, conn: sqlite3.Connection, writes: Sequence[Write]) -> None:
        """Run reservations and `apply` writes in queue order; a run of reservations is decided
        together (the totals are read once for the run)."""
        run: list[Write] = []

        def decide() -> None:
            asks = [w.ask for w in run if w.ask is not None]
            granted = sqlite_ledger.reserve(conn, self.calendar, asks, self.owner)
            for w, g in zip(run, granted, strict=True):
                w.result = g
            run.clear()

        for w in writes:
            if w.ask is not None:
                run.append(w)
                continue
            if run:
                decide()
            if w.apply is not None:
                w.result = w.apply(conn)
        if run:
            decide()

    def refresh(self) -> SpendTotals:
        """(Writer thread) Charge expired reservations, then read the totals: what every other
        process sharing the file has spent since."""
        conn = self._require_conn()
        now = time.time()
        expired = conn.execute(
            "SELECT 1 FROM reservations WHERE expires_at <= ? LIMIT 1", (now,)
        ).fetchone()
        if expired is not None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                sqlite_ledger.expire(conn, self.calendar, now)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return sqlite_ledger.totals(conn, self.calendar, now)

    def read(self, fn: Callable[[sqlite3.Connection, Calendar, float], Any], now: float) -> Any:
        """(Writer thread) A read of the ledger's sums as of `now`."""
        return fn(self._require_conn(), self.calendar, now)

    @property
    def connection(self) -> sqlite3.Connection:
        """(Writer thread) The write connection, outside any transaction."""
        return self._require_conn()

    def _require_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise sqlite3.OperationalError("the store is closed")
        return self._conn


def id_taken(exc: BaseException) -> bool:
    """True when `exc` says a request's id is already another record's."""
    return isinstance(exc, sqlite3.IntegrityError) and "requests.id" in str(exc)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _grouped(statement_lists: Iterable[Statements]) -> Statements:
    """Statements of several writes merged by SQL, in the order each SQL first appears, so a
    batch is one `executemany` per statement (requests before the verdicts that reference them)."""
    merged: dict[str, Rows] = {}
    for statements in statement_lists:
        for sql, rows in statements:
            merged.setdefault(sql, []).extend(rows)
    return list(merged.items())


def retry_locked(fn: Callable[[], object], attempts: int = 50) -> None:
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
