"""The PostgreSQL store's single writer: an asyncio task, its inbox, group commit, the spill.

As on SQLite, everything queued while a batch is being committed goes into the next batch: one
transaction (rows merged into one `executemany` per statement, then the ledger's charges), then
every waiter is told. A batch the server refuses is retried one write at a time, so one bad
write costs no other. A batch that cannot reach the server goes to the spill file instead (see
`orchestra.store.spill`): its waiters are told it is kept, and it is written to the database,
by this same task, once the database answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import asyncpg

import orchestra.store.postgres_ledger as pg_ledger
from orchestra.core.errors import StoreError
from orchestra.core.request import new_request_id
from orchestra.core.tier import Tier
from orchestra.spend.calendar import Calendar
from orchestra.spend.ledger import Charge, SpendTotals
from orchestra.store.postgres_db import DRAIN_LOCK, Conn, retry_later, retrying
from orchestra.store.record import RENEWALS, current_request_row
from orchestra.store.spill import Spill, money
from orchestra.store.write_outcomes import settle

log = logging.getLogger("orchestra.store")

# A write as rows by statement name, plus the ledger's charges and releases: what is committed,
# and what the spill file keeps (JSON: names, not SQL, so that a newer Orchestra can drain it).
Payload = dict[str, Any]

_REQUEST_COLUMNS = (
    "id", "created_at", "status", "model", "tier", "cost_usd", "latency_ms", "prompt_tokens",
    "completion_tokens", "prompt_sha256", "features", "prompt", "response", "forced_model",
    "forced_tier", "stream", "policy", "decision", "error_kind", "error", "detail",
)  # fmt: skip


def _insert_request() -> str:
    """A plain insert: a record never replaces another call's (see `RecordId`)."""
    marks = ", ".join(f"${i}" for i in range(1, len(_REQUEST_COLUMNS) + 1))
    return f"INSERT INTO requests ({', '.join(_REQUEST_COLUMNS)}) VALUES ({marks})"


# In this order within a transaction: requests before the feedback that refers to them.
STATEMENTS: dict[str, str] = {
    "request": _insert_request(),
    "shared": "INSERT INTO shared (key, json) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
    "sample": "INSERT INTO samples (agent, at, state, verdict) VALUES ($1, $2, $3, $4)",
    "breaker": (
        "INSERT INTO breaker_state (model, state, failures, opened_at, updated_at)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (model) DO UPDATE SET state = excluded.state,"
        " failures = excluded.failures, opened_at = excluded.opened_at,"
        " updated_at = excluded.updated_at"
    ),
    "breaker_event": (
        "INSERT INTO breaker_events (model, at, from_state, to_state, reason)"
        " VALUES ($1, $2, $3, $4, $5)"
    ),
    "cache": (
        "INSERT INTO response_cache (key, model, tier, text, prompt_tokens, completion_tokens,"
        " created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        " ON CONFLICT (key) DO UPDATE SET model = excluded.model, tier = excluded.tier,"
        " text = excluded.text, prompt_tokens = excluded.prompt_tokens,"
        " completion_tokens = excluded.completion_tokens, created_at = excluded.created_at,"
        " expires_at = excluded.expires_at"
    ),
    "purge": "DELETE FROM response_cache WHERE expires_at <= $1",
    "feedback": "INSERT INTO feedback (request_id, at, good, note) VALUES ($1, $2, $3, $4)",
}
# Keys whose rows several hosts may write at once: sorted, so two batches never deadlock.
_SORTED = frozenset({"shared", "breaker", "cache"})


def charge_json(request_id: str | None, c: Charge, at: float) -> list[Any]:
    return [request_id, {"model": c.model, "tier": str(c.tier), "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.completion_tokens, "cost_usd": c.cost_usd, "kind": c.kind,
            "hold_id": c.hold_id, "usage_reported": c.usage_reported}, at]  # fmt: skip


def charge_of(item: Sequence[Any]) -> tuple[str | None, Charge, float]:
    request_id, c, at = item
    return request_id, Charge(**{**c, "tier": Tier(c["tier"])}), float(at)


def renamed(payload: Payload, rid: str) -> Payload:
    """A record's payload under the id `rid`: its request row and its charges."""
    rows = payload["rows"]
    return {
        **payload,
        "request": rid,
        "rows": {**rows, "request": [[rid, *row[1:]] for row in rows["request"]]},
        "charges": [[rid, *c[1:]] for c in payload.get("charges", ())],
    }


def id_taken(exc: BaseException) -> bool:
    """True when `exc` says a request's id is already another record's."""
    return (
        isinstance(exc, asyncpg.exceptions.UniqueViolationError)
        and getattr(exc, "constraint_name", None) == "requests_pkey"
    )


_SAME_CALL = (_REQUEST_COLUMNS.index("created_at"), _REQUEST_COLUMNS.index("latency_ms"))


def _call_of(payload: Payload) -> tuple[Any, ...]:
    """What tells one call's record from another's under the same id: its start and its latency
    (both kept to the bit, in the spill file too)."""
    row = payload["rows"]["request"][0]
    return tuple(row[i] for i in _SAME_CALL)


def _second_id(payload: Payload) -> str:
    """The id a spilled record is drained under when another call's record has its own: derived
    from the record, so a drain run again (its commit unheard) finds it there."""
    key = f"{payload['request']}|{_call_of(payload)!r}".encode()
    return hashlib.blake2b(key, digest_size=16).hexdigest()


async def _unwritten(conn: Conn, payloads: Sequence[Payload]) -> list[Payload]:
    """Spilled payloads less those already in the database (committed before their connection
    broke, or their process died before marking them drained): a record found there, or a
    payload whose `key` was kept (see `apply_payloads`), is skipped whole, its charges with it.
    A record whose id another call's record has is written beside it, under its second id."""
    keys = [p["key"] for p in payloads if p.get("key")]
    if keys:
        applied = {
            r[0]
            for r in await conn.fetch(
                "SELECT key FROM spill_applied WHERE key = ANY($1::text[])", keys
            )
        }
        payloads = [p for p in payloads if p.get("key") not in applied]
    records = [p for p in payloads if p.get("request")]
    if not records:
        return list(payloads)
    ids = [p["request"] for p in records] + [_second_id(p) for p in records]
    found = {
        r[0]: (r[1], r[2])
        for r in await conn.fetch(
            "SELECT id, created_at, latency_ms FROM requests WHERE id = ANY($1::text[])", ids
        )
    }
    out = []
    for p in payloads:
        if p.get("request"):
            call, second = _call_of(p), _second_id(p)
            if call in (found.get(p["request"]), found.get(second)):
                continue
            if p["request"] in found:
                p = renamed(p, second)
        out.append(p)
    return out


async def apply_payloads(
    conn: Conn,
    cal: Calendar,
    payloads: Sequence[Payload],
    *,
    drain: bool = False,
    host: str | None = None,
) -> int:
    """Write payloads inside the caller's transaction; returns how many were applied. With
    `drain` (from the spill file), a record already in the database, or a payload whose key is
    kept there, is not written again (see `_unwritten`). `host`: the spill file's, whose
    offline holds the payloads' negative hold ids are."""
    if drain:
        payloads = await _unwritten(conn, payloads)
    merged: dict[str, list[tuple[Any, ...]]] = {}
    charges: list[tuple[str | None, Charge, float]] = []
    releases: list[int] = []
    for p in payloads:
        for key, rows in p.get("rows", {}).items():
            fit = current_request_row if key == "request" else tuple
            merged.setdefault(key, []).extend(fit(r) for r in rows)
        charges.extend(charge_of(c) for c in p.get("charges", ()))
        releases.extend(p.get("releases", ()))
    for key, sql in STATEMENTS.items():
        rows = merged.get(key)
        if rows:
            await conn.executemany(
                sql, sorted(rows, key=lambda r: str(r[0])) if key in _SORTED else rows
            )
    keys = [p["key"] for p in payloads if p.get("key")]
    if keys:  # written: a drain run again skips them (see `_unwritten`)
        await conn.execute(
            "INSERT INTO spill_applied (key, at) SELECT unnest($1::text[]), $2"
            " ON CONFLICT (key) DO NOTHING",
            keys,
            time.time(),
        )
    if charges or releases:
        await pg_ledger.write_charges(conn, cal, charges, releases, host)
    return len(payloads)


@dataclass(slots=True)
class PgWrite:
    """One unit of the queue: `make` builds its payload on the writer (so serialising happens
    in batches, off the caller's path); `call` runs alone between batches (the drain). A write
    with neither is a flush marker. `essential` writes are kept in the spill file when the
    database is unreachable, or fail; the others are dropped first (samples, cache)."""

    make: Callable[[], Payload] | None = None
    call: Callable[[], Awaitable[object]] | None = None
    money: bool = False
    essential: bool = True
    spill: bool = True  # False: pointless once stale (the response cache): dropped offline
    quiet: bool = False
    done: asyncio.Future[Any] | None = None
    payload: Payload | None = None
    result: object = None
    error: BaseException | None = field(default=None, repr=False)

    @property
    def marker(self) -> bool:
        return self.make is None and self.call is None


class PgWriter:
    """Owns the write path; `submit` queues a write and, if asked, returns a future resolved
    once it is committed (or kept in the spill file while the database is unreachable).

    `link` decides where a batch goes: `link.degraded` says the database is unreachable;
    `link.lost(exc)` is told when a batch finds it so; `on_offline(usd)` what writes settling
    holds granted offline charged here (no reservation of the database covered it); `on_totals`
    gets the spend totals after
    commits that moved money (at most every `TOTALS_EVERY_S`).
    """

    TOTALS_EVERY_S = 0.2

    def __init__(
        self,
        pool: asyncpg.Pool,
        calendar: Calendar,
        spill: Spill,
        link: Link,
        on_totals: Callable[[SpendTotals], None],
        on_offline: Callable[[float], None],
        host: str | None = None,
    ) -> None:
        self.pool = pool
        self.calendar = calendar
        self.spill = spill
        self.host = host  # the spill file's id
        self.link = link
        self._on_totals = on_totals
        self._on_offline = on_offline
        self._inbox: asyncio.Queue[PgWrite | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._unreported: StoreError | None = None
        self._totals_at = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._serve(), name="orchestra-pg-writer")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._inbox.put_nowait(None)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def submit(self, write: PgWrite, *, wait: bool) -> asyncio.Future[Any] | None:
        if not self.running:
            raise StoreError("the store is not open")
        if wait:
            write.done = asyncio.get_running_loop().create_future()
        self._inbox.put_nowait(write)
        return write.done

    async def run(self, fn: Callable[[], Awaitable[object]]) -> Any:
        """Run `fn` on the writer, between batches (nothing else writes meanwhile)."""
        done = self.submit(PgWrite(call=fn), wait=True)
        assert done is not None
        return await done

    async def flush(self) -> None:
        if self.running:
            done = self.submit(PgWrite(), wait=True)
            assert done is not None
            await done

    async def _serve(self) -> None:
        while True:
            batch: list[PgWrite | None] = [await self._inbox.get()]
            while not self._inbox.empty():
                batch.append(self._inbox.get_nowait())
            writes = [w for w in batch if w is not None]
            try:
                await self._process(writes)
            except Exception as exc:  # the writer must outlive any one batch
                log.exception("store: a batch failed")
                for w in writes:
                    w.error = w.error or exc
            self._unreported = settle(writes, self._unreported)
            if any(w is None for w in batch):
                return

    async def _process(self, batch: list[PgWrite]) -> None:
        for w in batch:
            if w.call is not None:
                try:
                    w.result = await w.call()
                except Exception as exc:
                    w.error = exc
        writes = [w for w in batch if w.make is not None]
        for w in writes:
            assert w.make is not None
            try:
                w.payload = w.make()
            except Exception as exc:  # one bad record must not cost the others
                log.exception("store: cannot serialise a write; it is dropped")
                w.error = exc
        writes = [w for w in writes if w.payload is not None]
        if not writes:
            return
        await self._write(writes)
        for w in writes:  # a record's waiter is told the id it got
            if w.payload is not None and w.payload.get("request") and w.error is None:
                w.result = w.payload["request"]

    async def _write(self, writes: list[PgWrite]) -> None:
        """Commit the writes, or keep them in the spill file if the database is unreachable or
        cannot take them now (a lock timed out...: see `retry_later`)."""
        if not self.link.degraded:
            try:
                await self._commit(writes)
            except Exception as exc:
                if not retry_later(exc):
                    raise
                self.link.lost(exc)
            else:
                await self._settle_offline(writes)
                return
        await self._to_spill(writes)

    async def _settle_offline(self, writes: list[PgWrite]) -> None:
        """Charges (or releases) of holds granted offline, committed here: their holds leave
        the spill file, else their lease would run out and charge them again as lost. What was
        charged under a hold still in the file is out yet in no totals read so far
        (`on_offline`); a hold carried into the database since is in its totals already."""
        settled = [money(w.payload) for w in writes if w.money and w.error is None and w.payload]
        settled = [(usd, [-h for h in holds]) for usd, holds in settled if holds]
        if not settled:
            return
        held = [h for _, holds in settled for h in holds]
        try:
            gone = await asyncio.to_thread(self.spill.settle_offline, held)
        except Exception as exc:  # busy or broken: those holds count till they run out
            log.error("store: cannot settle offline holds in %s: %s", self.spill.path, exc)
            gone = set(held)
        for usd, holds in settled:
            if gone.intersection(holds):
                self._on_offline(usd)

    async def _commit(self, writes: list[PgWrite]) -> None:
        """One transaction for the batch; if the server refuses it, each write alone."""
        async with self.pool.acquire() as conn:
            try:
                await self._transaction(conn, [w.payload for w in writes if w.payload])
            except Exception as exc:
                if retry_later(exc) or (len(writes) == 1 and not id_taken(exc)):
                    raise
                for w in writes:
                    await self._alone(conn, w)
            if any(w.money and w.error is None for w in writes):
                now = time.time()
                if now - self._totals_at >= self.TOTALS_EVERY_S:
                    self._totals_at = now
                    self._on_totals(await pg_ledger.totals(conn, self.calendar, now))

    async def _alone(self, conn: Conn, w: PgWrite) -> None:
        """One write in its own transaction; a record whose id another call's record has is
        written under a fresh one (never over it). Raises only if the server cannot take it now
        (`retry_later`)."""
        for _ in range(RENEWALS + 1):
            try:
                await self._transaction(conn, [w.payload] if w.payload else [])
                w.error = None
                return
            except Exception as exc:
                if retry_later(exc):
                    raise
                w.error = exc
                if w.payload is None or not w.payload.get("request") or not id_taken(exc):
                    return
                w.payload = renamed(w.payload, new_request_id())
        log.error("store: a record found its id taken %d times; it is not written", RENEWALS)

    async def _transaction(self, conn: Conn, payloads: list[Payload]) -> None:
        async def once() -> None:
            async with conn.transaction():
                await apply_payloads(conn, self.calendar, payloads, host=self.host)

        await retrying(once)

    async def _to_spill(self, writes: list[PgWrite]) -> None:
        """Keep a batch the database could not take in the spill file."""
        keep = [w for w in writes if w.spill]
        for w in writes:
            if not w.spill:
                w.result = None  # a cache entry: worthless by the time it could be written
        if not keep:
            return
        entries = [("write", w.payload or {}) for w in keep]
        essential = [w.essential for w in keep]
        try:
            await asyncio.to_thread(self.spill.append, entries, essential)
        except StoreError as exc:
            for w in keep:
                w.error = exc
            return
        except Exception as exc:
            for w in keep:
                w.error = StoreError(f"cannot write the spill file {self.spill.path}: {exc}")
            return

    async def drain(self, batch: int = 500) -> int | None:
        """(On the writer, via `run`) Carry the host's offline holds into the database, then
        write the spill file's entries to it, oldest first; returns how many holds and entries,
        or None while another process of the host drains the file. Raises if the database is
        unreachable again, or cannot take them now (`retry_later`): they wait for the next
        drain."""
        if not await asyncio.to_thread(self.spill.lock):
            return None  # another process on this host is draining the same file
        try:
            done = await self._carry_holds()
            while True:
                entries = await asyncio.to_thread(self.spill.take, batch)
                if not entries:
                    return done
                await self._drain_entries(entries)
                done += len(entries)
        finally:
            await asyncio.to_thread(self.spill.unlock)

    async def _carry_holds(self) -> int:
        """The host's holds granted offline become reservations of the database (see
        `postgres_ledger.carry`) and leave the spill file; returns how many."""
        holds = await asyncio.to_thread(self.spill.offline_holds)
        if not holds or self.host is None:
            return 0
        owner = f"{self.host}/offline"
        async with self.pool.acquire() as conn:
            await retrying(partial(pg_ledger.carry, conn, self.host, holds, owner, time.time()))
        ids = [h[0] for h in holds]
        await asyncio.to_thread(self.spill.carried_holds, ids, owner, time.time())
        return len(holds)

    async def _drain_entries(self, entries: list[tuple[int, str, Payload]]) -> None:
        aside: set[int] = set()
        async with self.pool.acquire() as conn:
            try:
                await self._drain_transaction(conn, [p for _, _, p in entries])
            except Exception as exc:
                if retry_later(exc):
                    raise
                for one in entries:  # find the entry the server refuses; keep it aside
                    try:
                        await self._drain_transaction(conn, [one[2]])
                    except Exception as alone:
                        if retry_later(alone):  # not now: the drain is tried again later
                            raise
                        log.error("store: a spilled write is refused (%s); kept aside", alone)
                        await asyncio.to_thread(self.spill.quarantine, [one[0]])
                        aside.add(one[0])
        # What is kept aside stays in the file (`counts` reports it): not deleted with the rest.
        done = [i for i, _, _ in entries if i not in aside]
        await asyncio.to_thread(self.spill.drained, done, time.time())

    async def _drain_transaction(self, conn: Conn, payloads: list[Payload]) -> None:
        async def once() -> None:
            async with conn.transaction():
                # One drainer at a time across hosts, so "already there?" is answered right.
                await conn.execute("SELECT pg_advisory_xact_lock($1)", DRAIN_LOCK)
                await apply_payloads(conn, self.calendar, payloads, drain=True, host=self.host)

        await retrying(once)


class Link:
    """Whether the database answers, as the writer and the reserver see it."""

    def __init__(self, on_lost: Callable[[BaseException], None]) -> None:
        self.degraded = False
        self._on_lost = on_lost

    def lost(self, exc: BaseException) -> None:
        if not self.degraded:
            self.degraded = True
            self._on_lost(exc)
