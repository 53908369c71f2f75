"""The processes of one host cut off from PostgreSQL share ONE offline allowance through the
spill file: their holds and their spend are rows there, decided in one SQLite transaction; a
killed process's hold runs out and is counted as lost; the share is per host (spill file), not
per process; and when the database is back, everything is in it once."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from ledger_child import call_cost, outputs
from test_postgres import _with_charges, ask, options, rows, spawn
from test_store import make_record

from orchestra.core.tier import Tier
from orchestra.spend.ledger import Charge, Hold, Refusal
from orchestra.store.postgres import PostgresStore


def down_url(tmp_path: Path) -> str:
    """A database that cannot be reached: its Unix socket does not exist."""
    return f"postgresql://postgres@/orchestra?host={tmp_path / 'nowhere'}"


async def read_totals_once(url: str, home: Path) -> None:
    """Online once: the spill file in `home` keeps the shared totals (nothing spent, 1 host)."""
    async with PostgresStore(url, options(home)):
        pass


@pytest.mark.slow
def test_two_processes_of_one_host_cut_off_together_pay_at_most_what_was_left(
    pg_url: str, isolated_env: Path, tmp_path: Path
) -> None:
    """One host, one process seen before the outage; then two processes start while the
    database is down. Together they may spend what was left, not each of them all of it."""
    covered = 10
    budget = (covered + 0.5) * call_cost()
    asyncio.run(read_totals_once(pg_url, isolated_env))
    gate = tmp_path / "gate"
    gate.mkdir()
    children = [spawn("budget", tmp_path / f"p{i}", 20, budget, down_url(tmp_path), gate)
                for i in range(2)]  # fmt: skip
    while len(list(gate.glob("ready.*"))) < 2:  # both cut off and started before either spends
        assert all(c.poll() is None for c in children), [c.communicate() for c in children]
        time.sleep(0.02)
    (gate / "go").touch()
    summaries = outputs(children)
    paid = sum(s["paid"] for s in summaries)
    assert paid <= covered, summaries
    assert paid == covered, "honest calls: the whole of what was left is used"
    assert sum(s["answered"] for s in summaries) == 40, "the rest answered locally"

    async def recovered() -> None:
        async with PostgresStore(pg_url, options(isolated_env)) as store:
            await store.flush()  # the spill file is drained as the store opens
            assert not store.degraded
            totals = await store.spend_totals()
            summary = await store.spend_summary()
        spent = sum(s["cost"] for s in summaries)
        assert totals.today_usd == pytest.approx(spent), "the totals are what was spent"
        assert totals.reserved_usd == 0.0
        assert summary["spill_pending"] == 0 and summary["answered_requests"] == 40
        ((count,),) = await rows(pg_url, "SELECT COUNT(*) FROM ledger")
        assert count == covered, "each paid call charged once"

    asyncio.run(recovered())


async def test_a_killed_processes_offline_hold_runs_out_and_is_counted_as_lost(
    pg_url: str, isolated_env: Path, tmp_path: Path
) -> None:
    await read_totals_once(pg_url, isolated_env)
    down, lease_s = down_url(tmp_path), 1.0
    child = spawn("hold", isolated_env, down, 0.6, lease_s)
    assert child.stdout is not None
    line = await asyncio.to_thread(child.stdout.readline)
    held_at = time.monotonic()
    child.kill()
    await asyncio.to_thread(child.wait)
    assert json.loads(line) == {"degraded": True, "hold": json.loads(line)["hold"]}
    assert json.loads(line)["hold"] < 0, "an offline hold"

    other = await PostgresStore(down, options(isolated_env)).open()
    try:
        assert other.degraded
        # $1 a day, $0.60 held by the killed process: live until its lease runs out.
        assert isinstance(await other.reserve(ask(0.6)), Refusal)
        await asyncio.sleep(max(0.0, lease_s + 0.2 - (time.monotonic() - held_at)))
        summary = await other.spend_summary()
        assert summary["today_usd"] == pytest.approx(0.6), "the dead hold is spent (lost)"
        assert summary["reserved_usd"] == pytest.approx(0.0), "and no longer held"
        refused = await other.reserve(ask(0.6))
        assert isinstance(refused, Refusal) and refused.left_usd == pytest.approx(0.4)
        held = await other.reserve(ask(0.4))
        assert isinstance(held, Hold), "the host is not blocked: what is left is there"
        charge = Charge(model="c1", tier=Tier.CLOUD, prompt_tokens=1, completion_tokens=1,
                        cost_usd=0.4, hold_id=held.id)  # fmt: skip
        await other.record(_with_charges(make_record(created_at=time.time(), cost=0.4), charge))
    finally:
        await other.close()

    async with PostgresStore(pg_url, options(isolated_env)) as store:
        await store.flush()
        totals = await store.spend_totals()
    assert totals.today_usd == pytest.approx(1.0)
    assert totals.reserved_usd == 0.0
    ledger = await rows(pg_url, "SELECT request_id, kind, cost_usd FROM ledger ORDER BY id")
    assert sorted((k, c) for _, k, c in ledger) == [("answer", 0.4), ("lost", 0.6)]
    assert ("killed", "lost", 0.6) in ledger


async def test_an_offline_hold_settled_after_the_database_is_back_is_not_charged_as_lost(
    pg_url: str, isolated_env: Path, tmp_path: Path
) -> None:
    """A call that started degraded and ended after recovery: its charge reaches the database
    directly, and its offline hold is gone from the spill file (never charged again as lost)."""
    async with PostgresStore(pg_url, options(isolated_env)) as store:
        store._link.lost(OSError("cable cut"))
        held = await store.reserve(ask(0.3, lease_s=0.2))
        assert isinstance(held, Hold) and held.id < 0
        assert await store._w().run(store._recover), "the database is back"
        charge = Charge(model="c1", tier=Tier.CLOUD, prompt_tokens=1, completion_tokens=1,
                        cost_usd=0.3, hold_id=held.id)  # fmt: skip
        await store.record(_with_charges(make_record(created_at=time.time(), cost=0.3), charge))
        await asyncio.sleep(0.3)  # past the offline hold's lease
        store._link.lost(OSError("cut again"))  # before the totals are read again
        held = await store.reserve(ask(0.7))
        assert isinstance(held, Hold), "$0.30 spent once, not twice"
        refused = await store.reserve(ask(0.01))
        assert isinstance(refused, Refusal), "$0.30 spent, though no totals read counted it"
        store.release(held)
    async with PostgresStore(pg_url, options(isolated_env)) as store:
        await store.flush()  # drains whatever the second cut spilled
        assert (await store.spend_totals()).today_usd == pytest.approx(0.3)
    ledger = await rows(pg_url, "SELECT kind, cost_usd FROM ledger")
    assert ledger == [("answer", 0.3)]


async def test_the_offline_share_is_per_host_not_per_process(pg_url: str, tmp_path: Path) -> None:
    """Two processes on host a (one spill file), one on host b: what was left is split in two,
    and host a's processes share their half."""
    a1 = await PostgresStore(pg_url, options(tmp_path / "a")).open()
    a2 = await PostgresStore(pg_url, options(tmp_path / "a")).open()
    b = await PostgresStore(pg_url, options(tmp_path / "b")).open()
    try:
        for store in (a1, a2, b):
            await store._refresh()
        assert a1._clients == 2, "two hosts"
        for store in (a1, a2):
            store._link.lost(OSError("cable cut"))
        # $1 a day, nothing spent, two hosts: $0.50 for host a, whichever process asks.
        assert isinstance(await a1.reserve(ask(0.3)), Hold)
        refused = await a2.reserve(ask(0.3))
        assert isinstance(refused, Refusal) and refused.left_usd == pytest.approx(0.2)
        assert isinstance(await a2.reserve(ask(0.2)), Hold)
    finally:
        for store in (a1, a2, b):
            await store.close()
