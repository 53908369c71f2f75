"""The PostgreSQL store under real connection faults, at the worst moments: a proxy between the
store and the server (tests/pg_proxy.py) loses a commit's answer, cuts a connection mid-
transaction, or leaves a session open on the server with its client gone; the server itself
ends sessions, and times statements out.

What must hold whatever breaks: a budget is never overspent, a returned answer is a recorded
answer (or `NotRecorded`, said), and no record, charge or reservation is counted twice or lost.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from unittest.mock import ANY
from urllib.parse import urlsplit

import asyncpg
import pytest
from pg_proxy import PgProxy
from test_postgres import _with_charges, ask, options, rows
from test_request_ids import spilled
from test_store import make_record

from orchestra.core.tier import Tier
from orchestra.spend.ledger import Charge, Hold, Refusal
from orchestra.store import PostgresOptions, RequestRecord, Timeouts
from orchestra.store.postgres import PostgresStore
from orchestra.store.spill import Spill


@pytest.fixture
async def proxy(pg_url: str) -> AsyncIterator[tuple[PgProxy, str]]:
    """A proxy in front of this test's database, and the URL that goes through it."""
    proxy, url = await PgProxy.before(pg_url)
    yield proxy, url
    await proxy.stop()


async def test_a_session_the_server_ended_while_idle_is_a_lost_connection_not_a_refusal(
    pg_url: str, proxy: tuple[PgProxy, str], tmp_path: Path
) -> None:
    """A fast shutdown or `pg_terminate_backend` tells each idle session it is ended, then
    closes it; asyncpg's next use of such a connection raises `InternalClientError` (a protocol
    state it cannot leave). That was taken for a write the server refused: the record was lost
    (`NotRecorded`, its hold left to be charged whole as lost), and a reservation failed (its
    paid call skipped) though the database was there. Now the record is kept (spilled, then
    drained), and the reservation is made on a fresh connection (not on the pool's next one,
    which the server ended too)."""
    fault, url = proxy
    async with PostgresStore(url, options(tmp_path)) as store:
        await store.record(make_record(created_at=time.time()))  # a connection in the pool
        await fault.say_goodbye()
        rid = await store.record(make_record(created_at=time.time(), cost=0.1))
        assert await store._w().run(store._recover), "the database answers again"
    assert (rid,) in await rows(pg_url, "SELECT id FROM requests")
    async with PostgresStore(url, options(tmp_path / "b")) as store:
        reads = [store.fetch("SELECT pg_sleep(0.05)") for _ in range(3)]
        await asyncio.gather(store.reserve(ask(0.1)), *reads)  # connections in the pool
        await fault.say_goodbye()
        held = await store.reserve(ask(0.2))
        assert isinstance(held, Hold) and held.id > 0, "granted by the database"
        assert not store.degraded


def paid(hold: Hold, usd: float) -> RequestRecord:
    """A call's record, charged `usd` under `hold`."""
    charge = Charge(model="c1", tier=Tier.CLOUD, prompt_tokens=1, completion_tokens=1,
                    cost_usd=usd, hold_id=hold.id)  # fmt: skip
    return _with_charges(make_record(created_at=time.time(), cost=usd), charge)


async def lock_timeout(url: str, value: str) -> None:
    """Every new session of the database waits no longer than `value` for a lock (as an
    administrator may set it)."""
    name = urlsplit(url).path.lstrip("/")
    await rows(url, f"ALTER DATABASE {name} SET lock_timeout = '{value}'")


@asynccontextmanager
async def table_locked(url: str, table: str) -> AsyncIterator[asyncpg.Connection]:
    """Another session holds `table` whole (a long migration, an admin's transaction)."""
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            yield conn
    finally:
        await conn.close()


async def cancel_waiting(conn: asyncpg.Connection) -> None:
    """Cancel each statement of Orchestra's that waits on a lock (as an admin, or a statement
    timeout on the server, would: SQLSTATE 57014), until cancelled itself."""
    while True:
        await conn.fetch(
            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'orchestra' AND wait_event_type = 'Lock'"
        )
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("timed_out", ["lock_timeout", "cancelled"])
async def test_a_write_the_server_timed_out_is_kept_and_written_later(
    pg_url: str, tmp_path: Path, timed_out: str
) -> None:
    """A batch the server aborted for a lock timeout (55P03) or a cancelled statement (57014:
    a statement timeout, an admin's cancel) was taken for bad data: each write was retried alone
    (each waiting out the timeout again) and every record was dropped (`NotRecorded`), its
    hold left to be charged whole as lost. The server took nothing and would take it later: the
    batch is kept in the spill file and written once the table is free."""
    if timed_out == "lock_timeout":  # as an administrator may set it for every session
        await lock_timeout(pg_url, "200ms")
    async with PostgresStore(pg_url, options(tmp_path)) as store:
        holds = [await store.reserve(ask(0.2)) for _ in range(3)]
        assert all(isinstance(h, Hold) and h.id > 0 for h in holds)
        async with table_locked(pg_url, "spend_day"):
            admin = await asyncpg.connect(pg_url)
            canceller = asyncio.create_task(cancel_waiting(admin))
            if timed_out == "lock_timeout":
                canceller.cancel()
            try:
                ids = await asyncio.gather(*(store.record(paid(h, 0.1)) for h in holds
                                             if isinstance(h, Hold)))  # fmt: skip
            finally:
                canceller.cancel()
                await asyncio.gather(canceller, return_exceptions=True)
                await admin.close()
        assert store.degraded, "kept in the spill file meanwhile"
        assert await store._w().run(store._recover)
        totals = await store.spend_totals()
    assert sorted(r[0] for r in await rows(pg_url, "SELECT id FROM requests")) == sorted(ids)
    assert totals.today_usd == pytest.approx(0.3) and totals.reserved_usd == 0.0
    assert await rows(pg_url, "SELECT kind, COUNT(*) FROM ledger GROUP BY kind") == [("answer", 3)]


async def test_a_drain_the_server_timed_out_sets_nothing_aside(pg_url: str, tmp_path: Path) -> None:
    """A drain aborted for a lock timeout set every entry of its batch aside as refused (bad
    data): kept in the file, never written, their spend missing from the shared totals (so the
    budget could be spent again). They wait, and are written when the table is free."""
    await lock_timeout(pg_url, "200ms")
    async with PostgresStore(pg_url, options(tmp_path)) as store:
        await store.flush()  # its own drain at open is done
        kept = [spilled(_with_charges(make_record(created_at=time.time() + i, cost=0.1),
                                      Charge(model="c1", tier=Tier.CLOUD, prompt_tokens=1,
                                             completion_tokens=1, cost_usd=0.1)))
                for i in range(3)]  # fmt: skip
        await asyncio.to_thread(store._spill.append, [("write", p) for p in kept], [True] * 3)
        async with table_locked(pg_url, "requests"):
            assert not await store._w().run(store._recover), "not written: the table is taken"
        assert await asyncio.to_thread(store._spill.counts) == (3, ANY, 0), "none set aside"
        assert await store._w().run(store._recover)
        assert (await store.spend_totals()).today_usd == pytest.approx(0.3)
    assert len(await rows(pg_url, "SELECT id FROM requests")) == 3


async def test_a_client_gone_mid_reservation_blocks_no_other_hosts_budget(
    pg_url: str, proxy: tuple[PgProxy, str], tmp_path: Path
) -> None:
    """A host that loses power (or its network) inside a reservation leaves its session open on
    the server, idle in its transaction, holding the budget's lock: the server notices a silent
    client only when TCP keepalives give up (two hours by default). Every other host's
    reservation waited on that lock until its statement timed out: no paid call anywhere. The
    server now ends such a session when it has idled in its transaction half a statement
    timeout, and the lock is free for the others."""
    fault, url = proxy
    quick = Timeouts(connect_s=1.0, statement_s=2.0)
    gone = PostgresStore(url, PostgresOptions(spill_path=tmp_path / "a.db", timeouts=quick))
    other = PostgresStore(pg_url, PostgresOptions(spill_path=tmp_path / "b.db", timeouts=quick))
    async with gone, other:
        fault.arm("vanish_after", "DELETE FROM reservations WHERE expires_at")  # lock held
        cut_off = asyncio.create_task(gone.reserve(ask(0.1)))
        await fault.fault_fired()
        started = time.monotonic()
        held = await other.reserve(ask(0.2))
        assert isinstance(held, Hold) and held.id > 0, "granted by the database"
        assert time.monotonic() - started < quick.statement_s
        await cut_off


async def test_a_reservation_committed_unheard_is_not_held_twice(
    pg_url: str, proxy: tuple[PgProxy, str], tmp_path: Path
) -> None:
    """The connection dies after the reservation's COMMIT reached the server, before its answer
    came back: the store cannot tell it was granted, and asks again. The first grant stayed in
    the database, held by nobody: it kept that much of the budget from every host until its
    lease ran out, and was then charged whole as lost, for a call never made. The retry takes
    back what the attempt it replaces may have granted; so does the next reservation after an
    outage, when the retry could not be made either."""
    fault, url = proxy
    async with PostgresStore(url, options(tmp_path)) as store:
        fault.arm("lose_commit_answer", "INSERT INTO reservations")
        held = await store.reserve(ask(0.3))
        assert fault.fired == ["lose_commit_answer"]
        assert isinstance(held, Hold) and held.id > 0
        assert await rows(pg_url, "SELECT id FROM reservations") == [(held.id,)]
        assert isinstance(await store.reserve(ask(0.7)), Hold), "$1 a day: $0.70 is left"
        # Unheard, and the retry cut off too: granted offline; taken back once the database is
        # back (the phantom would otherwise be charged as lost when its lease ran out).
        fault.arm("lose_commit_answer", "INSERT INTO reservations")
        fault.arm("cut_before", "SELECT pg_advisory_xact_lock")
        store.release(held)
        offline = await store.reserve(ask(0.3, daily=10.0))
        assert isinstance(offline, Hold) and offline.id < 0 and store.degraded
        store.release(offline)  # its call never made
        assert await store._w().run(store._recover)
        for _ in range(100):  # the reserver takes it back as soon as the database is back
            live = await rows(pg_url, "SELECT usd FROM reservations")
            if len(live) == 1:
                break
            await asyncio.sleep(0.01)
        assert live == [(0.7,)], "only the $0.70 hold, still out"


async def test_a_dead_offline_holds_charge_drained_unheard_is_counted_once(
    pg_url: str, proxy: tuple[PgProxy, str], tmp_path: Path
) -> None:
    """A hold granted offline by a process that died is charged as lost (its lease ran out) by
    an entry of the spill file. A drain whose commit went unheard (or whose process was killed
    before it marked its entries drained) is run again: a record already in the database is
    skipped, but that charge, with no record to find, was written twice."""
    fault, url = proxy
    async with PostgresStore(url, options(tmp_path)) as store:
        store._link.lost(OSError("cable cut"))
        held = await store.reserve(ask(0.3, lease_s=0.05))
        assert isinstance(held, Hold) and held.id < 0
        await asyncio.sleep(0.1)
        await store._offline_totals()  # its lease ran out: a lost charge waits in the file
        fault.arm("lose_commit_answer", "INSERT INTO ledger")
        assert not await store._w().run(store._recover), "the drain's answer was lost"
        assert fault.fired == ["lose_commit_answer"]
        assert await store._w().run(store._recover)
        assert (await store.spend_totals()).today_usd == pytest.approx(0.3)
    assert await rows(pg_url, "SELECT kind, cost_usd FROM ledger") == [("lost", 0.3)]


async def test_holds_granted_offline_count_in_the_database_once_it_is_back(
    pg_url: str, tmp_path: Path
) -> None:
    """Calls reserved while the database was unreachable, still running when it is back: their
    holds lived only in the spill file, so the database granted their amount again ($1 a day
    spent twice: $0.70 offline, then what looked left, online). Now the first process back
    carries the host's offline holds into the database (a dead process's too, charged there as
    lost when its lease runs out, once), and a process still cut off grants no more offline
    holds once another of its host has read the database again."""
    async with (
        PostgresStore(pg_url, options(tmp_path)) as store,
        PostgresStore(pg_url, options(tmp_path)) as peer,  # same host: same spill file
    ):
        for s in (store, peer):
            await s._refresh()  # the shared totals: nothing spent, one host
        for s in (store, peer):
            s._link.lost(OSError("database restarting"))
        mine = await store.reserve(ask(0.4))
        theirs = await peer.reserve(ask(0.3, lease_s=0.3))  # its process will die mid-call
        assert isinstance(mine, Hold) and isinstance(theirs, Hold) and mine.id < 0
        assert await store._w().run(store._recover)
        assert isinstance(await peer.reserve(ask(0.1)), Refusal), "the database is back"
        assert isinstance(await store.reserve(ask(0.3)), Hold), "$0.30 is left of $1"
        assert isinstance(await store.reserve(ask(0.01)), Refusal), "and no more"
        await store.record(paid(mine, 0.4))
        await asyncio.sleep(0.4)  # past the dead call's lease
        await store._refresh()  # charges the holds whose lease ran out
        totals = await store.spend_totals()
        assert await peer._w().run(peer._recover)
    assert totals.today_usd == pytest.approx(0.7) and totals.reserved_usd == pytest.approx(0.3)
    ledger = await rows(pg_url, "SELECT kind, cost_usd FROM ledger ORDER BY id")
    assert ledger == [("answer", 0.4), ("lost", 0.3)], "each once"


async def test_a_carried_hold_settled_while_cut_off_again_is_settled_in_the_database(
    pg_url: str, tmp_path: Path
) -> None:
    """Holds granted offline are reservations of the database once it is back; their calls
    still name them by their offline ids. Released, or charged, while the database is lost
    again, they are settled there when it answers: no reservation is left to run out and be
    charged as lost."""
    async with PostgresStore(pg_url, options(tmp_path)) as store:
        await store._refresh()
        store._link.lost(OSError("database restarting"))
        never, made = await store.reserve(ask(0.2)), await store.reserve(ask(0.3))
        assert isinstance(never, Hold) and isinstance(made, Hold) and made.id < 0
        assert await store._w().run(store._recover), "both carried into the database"
        store._link.lost(OSError("lost again"))
        store.release(never)
        await store.record(paid(made, 0.25))
        assert await store._w().run(store._recover)
        totals = await store.spend_totals()
    assert totals.today_usd == pytest.approx(0.25) and totals.reserved_usd == 0.0
    assert await rows(pg_url, "SELECT kind, cost_usd FROM ledger") == [("answer", 0.25)]


async def test_a_process_cut_off_first_counts_what_its_hosts_others_just_reserved(
    pg_url: str, tmp_path: Path
) -> None:
    """Processes of one host lose the database one after the other (each when it next uses
    it). The first to notice granted offline against the totals its host last kept (read up to
    five seconds before) plus what the processes already cut off had reserved: not what the
    others, still unaware, had just reserved in the database. $1 a day: $0.80 reserved online
    by one process, then $0.80 granted offline by another."""
    async with (
        PostgresStore(pg_url, options(tmp_path)) as busy,
        PostgresStore(pg_url, options(tmp_path)) as first,  # same host: same spill file
    ):
        for s in (busy, first):
            await s._refresh()  # the host's kept totals: nothing spent, nothing held
        assert isinstance(await busy.reserve(ask(0.8)), Hold)
        first._link.lost(OSError("database restarting"))  # `busy` has not noticed yet
        refused = await first.reserve(ask(0.8))
        assert isinstance(refused, Refusal) and refused.left_usd == pytest.approx(0.2)


async def test_offline_holds_carried_unheard_are_carried_once(
    pg_url: str, proxy: tuple[PgProxy, str], tmp_path: Path
) -> None:
    """The carry of the host's offline holds into the database, its commit unheard, is made
    again by the next drain: each hold is still one reservation there."""
    fault, url = proxy
    async with PostgresStore(url, options(tmp_path)) as store:
        await store._refresh()
        store._link.lost(OSError("database restarting"))
        held = [await store.reserve(ask(0.2)) for _ in range(2)]
        fault.arm("lose_commit_answer", "INSERT INTO offline_carried")
        assert not await store._w().run(store._recover), "the carry's answer was lost"
        assert await store._w().run(store._recover)
        live = await rows(pg_url, "SELECT usd FROM reservations")
        assert live == [(0.2,), (0.2,)], "one reservation each"
        for h in held:
            assert isinstance(h, Hold)
            await store.record(paid(h, 0.1))
        totals = await store.spend_totals()
    assert totals.today_usd == pytest.approx(0.2) and totals.reserved_usd == 0.0


async def test_a_hold_run_out_while_it_is_carried_is_charged_once(
    pg_url: str, tmp_path: Path
) -> None:
    """A process still cut off charged an offline hold whose lease ran out as lost while
    another process of its host was carrying that hold into the database, where it runs out
    again: charged twice. Once the host reads the database again, only the database charges
    what runs out."""
    async with (
        PostgresStore(pg_url, options(tmp_path)) as back,
        PostgresStore(pg_url, options(tmp_path)) as still,  # same host: same spill file
    ):
        for s in (back, still):
            await s._refresh()
        for s in (back, still):
            s._link.lost(OSError("database restarting"))
        assert isinstance(await still.reserve(ask(0.3, lease_s=0.05)), Hold)  # then it dies
        await asyncio.sleep(0.1)
        offline, read = still._offline, back._spill.offline_holds
        assert offline is not None

        def read_then_expire() -> list[Any]:
            holds = read()
            offline.totals(time.time())  # `still` looks at its allowance meanwhile
            return holds

        back._spill.offline_holds = read_then_expire  # type: ignore[method-assign]
        assert await back._w().run(back._recover)
        await back._refresh()  # the carried hold runs out here
        totals = await back.spend_totals()
        assert await still._w().run(still._recover)
    assert totals.today_usd == pytest.approx(0.3)
    assert await rows(pg_url, "SELECT kind, cost_usd FROM ledger") == [("lost", 0.3)]


def test_totals_kept_unsynced_leave_every_other_spill_commit_synced(tmp_path: Path) -> None:
    """Each reservation keeps its totals in the spill file without syncing it; the spilled
    records written meanwhile, by other threads on the same connection, are still synced."""
    spill = Spill(tmp_path / "spill.db", 1 << 20, "full")
    spill.host()
    stop = threading.Event()

    def keep() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            spill.keep_known({"today_usd": 0.0, "at": float(i)}, synced=False)

    keeper = threading.Thread(target=keep)
    keeper.start()
    try:
        seen = {spill.transaction(lambda db: db.execute("PRAGMA synchronous").fetchone()[0])
                for _ in range(300)}  # fmt: skip
    finally:
        stop.set()
        keeper.join()
    assert seen == {2}, "FULL, each time"
