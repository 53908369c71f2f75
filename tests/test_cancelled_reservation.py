"""A request cancelled while its reservation is being decided (a client that left, a caller's
timeout) never makes its call: a hold granted all the same is released, not left to expire and
be charged as a call that may have been billed. On SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from budget_helpers import WantsCloud
from budget_helpers import paid_and_free as config

from orchestra import Orchestra
from orchestra.store.postgres_db import BUDGET_LOCK
from orchestra.testing import Call, FunctionBackend


@asynccontextmanager
async def reservations_held_up(location: str | Path) -> AsyncIterator[None]:
    """Reservations wait (another process holds the write lock, or the budget's advisory lock)
    until the block ends."""
    if isinstance(location, str):
        conn = await asyncpg.connect(location)
        tx = conn.transaction()
        await tx.start()
        await conn.execute("SELECT pg_advisory_xact_lock($1)", BUDGET_LOCK)
        try:
            yield
        finally:
            await tx.commit()
            await conn.close()
        return
    lite = sqlite3.connect(location, isolation_level=None)
    lite.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        lite.execute("COMMIT")
        lite.close()


async def test_a_request_cancelled_while_reserving_leaves_no_hold(
    store_location: str | Path,
) -> None:
    calls: list[Call] = []

    def answer(call: Call) -> str:
        calls.append(call)
        return "Paris"

    async with Orchestra(
        config(store_location), agents=[WantsCloud()], backend=FunctionBackend(answer)
    ) as orc:
        await orc.complete("warm up")  # the executor is built, the store open
        async with reservations_held_up(store_location):
            task = asyncio.create_task(orc.complete("What is the capital of France?"))
            await asyncio.sleep(0.3)  # waiting for its reservation
            task.cancel()
            await asyncio.sleep(0.1)
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(calls) == 1, "the cancelled request never called the provider"
        deadline = time.monotonic() + 5.0
        while (held := await orc.store.fetch("SELECT COUNT(*) FROM reservations")) != [(0,)]:
            assert time.monotonic() < deadline, f"a hold outlived its cancelled request: {held}"
            await asyncio.sleep(0.05)
        entries = await orc.history(limit=2)
        assert (entries[0]["status"], entries[0]["error_kind"]) == ("error", "cancelled")
        summary = await orc.spend_summary()
        assert summary["reserved_usd"] == 0.0
        assert summary["total_usd"] == pytest.approx(sum(e["cost_usd"] or 0 for e in entries))
