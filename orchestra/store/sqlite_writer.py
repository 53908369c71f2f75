"""The SQLite store's single writer: a queue, a thread, one connection, group commit.

Everything queued while a batch is being written goes into the next batch, one `BEGIN IMMEDIATE`
transaction on the writer's own thread (one thread hop per batch, not per statement). So under
load many records share one commit, and alone a record waits for one. A batch that fails is
retried one write at a time, so one bad write costs no other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import orchestra.store.sqlite_ledger as sqlite_ledger
from orchestra.core.errors import StoreError
from orchestra.spend.calendar import Calendar
from orchestra.spend.ledger import Ask, SpendTotals
from orchestra.store.schema import migrate

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
    money: bool = False
    done: asyncio.Future[Any] | None = None
    quiet: bool = False  # a failure is logged, not kept for the next flush to raise
    result: object = None
    error: BaseException | None = field(default=None, repr=False)

    @property
    def marker(self) -> bool:
        return self.make is None and self.apply is None and self.ask is None


class Writer:
    """Owns the write connection; `submit` queues, the writer task commits, futures resolve.

    `on_totals` receives the spend totals read after every commit that moved money.
    """

    def __init__(
        self, path: Path, calendar: Calendar, on_totals: Callable[[SpendTotals], None]
    ) -> None:
        self.path = path
        self.calendar = calendar
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self._on_totals = on_totals
        self._conn: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._queue: asyncio.Queue[Write] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._unreported: StoreError | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="orchestra-store-writer")
        await self.run(self._connect)
        self._task = asyncio.create_task(self._write_forever(), name="orchestra-store-writer")

    async def stop(self) -> None:
        if self._task is not None:
            if not self._task.done():
                await self._flush_queue()
            task, self._task = self._task, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._thread is not None:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                await self.run(conn.close)
            self._thread.shutdown(wait=True)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def _connect(self) -> None:
        # isolation_level=None: transactions are ours (BEGIN IMMEDIATE), never implicit.
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            _with_retry(lambda: conn.execute("PRAGMA journal_mode=WAL"))
            conn.execute("PRAGMA synchronous=NORMAL")
            # Checkpoints run beside the writer (see SqliteStore), so no commit waits on one.
            conn.execute("PRAGMA wal_autocheckpoint=0")
            conn.execute("PRAGMA foreign_keys=ON")
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def run(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the writer's thread (where the connection lives)."""
        assert self._thread is not None
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    # -- the queue -------------------------------------------------------------------------------

    def submit(self, write: Write, *, wait: bool) -> asyncio.Future[Any] | None:
        if not self.running:
            raise StoreError("the store is not open")
        if wait:
            write.done = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(write)
        return write.done

    async def flush(self) -> None:
        if self.running:
            await self._flush_queue()

    async def _flush_queue(self) -> None:
        marker = Write(done=asyncio.get_running_loop().create_future())
        self._queue.put_nowait(marker)
        assert marker.done is not None
        await marker.done

    async def _write_forever(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            writes = [w for w in batch if not w.marker]
            totals = None
            if writes:
                try:
                    totals = await self.run(partial(self._commit, writes))
                except Exception as exc:  # the writer must outlive any one batch
                    for w in writes:
                        w.error = w.error or exc
            if totals is not None:
                self._on_totals(totals)
            self._settle(batch)

    def _settle(self, batch: list[Write]) -> None:
        """Tell each waiter how its write went; a failure nobody waits for is kept for the next
        flush (or logged, for best-effort writes such as samples)."""
        for w in batch:
            if w.marker:
                continue
            error = None if w.error is None else _store_error(w.error)
            if w.done is not None and not w.done.done():
                if error is None:
                    w.done.set_result(w.result)
                else:
                    w.done.set_exception(error)
                    w.done.exception()  # a caller that gave up waiting must not leave it unseen
            elif error is not None and w.quiet:
                log.warning("store: a write failed and is dropped: %s", error)
            elif error is not None:
                self._unreported = error
        for w in batch:
            if w.marker and w.done is not None and not w.done.done():
                failed, self._unreported = self._unreported, None
                if failed is None:
                    w.done.set_result(None)
                else:
                    w.done.set_exception(failed)

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
            if len(made) == 1:
                made[0][0].error = exc
            else:
                for one in made:
                    try:
                        self._transaction([one])
                    except sqlite3.Error as alone:
                        one[0].error = alone
        if not any(w.money and w.error is None for w, _ in made):
            return None
        return sqlite_ledger.totals(self._require_conn(), self.calendar, time.time())

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

    def _require_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise sqlite3.OperationalError("the store is closed")
        return self._conn


def _grouped(statement_lists: Iterable[Statements]) -> Statements:
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
