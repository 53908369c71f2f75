"""The PostgreSQL store under real connection faults, at the worst moments: a proxy between the
store and the server (tests/pg_proxy.py) loses a commit's answer, cuts a connection mid-
transaction, or leaves a session open on the server with its client gone; the server itself
ends sessions, and times statements out.

What must hold whatever breaks: a budget is never overspent, a returned answer is a recorded
answer (or `NotRecorded`, said), and no record, charge or reservation is counted twice or lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pg_proxy import PgProxy
from test_postgres import ask, options, rows
from test_store import make_record

from orchestra.spend.ledger import Hold
from orchestra.store.postgres import PostgresStore


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
