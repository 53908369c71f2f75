"""A store that cannot take a reservation (a disk in trouble) stops paid calls, not the request:
no paid call is made without its budget checked, and a free model still answers."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from orchestra import Orchestra
from orchestra.config import Config, parse_config
from orchestra.testing import FunctionBackend

MODELS = [
    {"name": "paid", "tier": "cloud", "litellm_model": "openai/paid",
     "input_cost_per_mtok": 1.0, "output_cost_per_mtok": 2.0},
    {"name": "free", "tier": "local", "litellm_model": "openai/free",
     "input_cost_per_mtok": 0.0, "output_cost_per_mtok": 0.0},
]  # fmt: skip


def budgeted(db: Path) -> Config:
    """A paid model tried first (quality_first: cloud before local) and a free one, a budget."""
    return parse_config(
        {"embedded": {"enabled": False}, "health": {"enabled": False}, "models": MODELS,
         "budget": {"daily_usd": 1.0}, "policy": {"name": "quality_first"},
         "store": {"path": str(db)}}
    )  # fmt: skip


async def test_a_reservation_the_store_cannot_write_skips_the_paid_model(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    config = budgeted(db)
    backend = FunctionBackend(lambda call: f"{call.model} answers")
    async with Orchestra(config, agents=[], backend=backend) as orc:
        await orc.ready()
        with sqlite3.connect(db) as conn:  # every reservation now fails inside the store
            conn.execute(
                "CREATE TRIGGER broken BEFORE INSERT ON reservations"
                " BEGIN SELECT RAISE(ABORT, 'disk trouble'); END"
            )
        result = await orc.complete("hello")
        (entry,) = await orc.history(limit=1)
    assert result.model == "free" and result.text == "free answers"
    assert [c.model for c in backend.calls] == ["free"], "no paid call without a reservation"
    skipped = entry["attempts"][0]
    assert skipped["model"] == "paid" and skipped["error_kind"] == "budget"
    assert "budget could not be checked" in skipped["error"]
    assert "disk trouble" in skipped["error"]


async def test_a_store_busy_past_the_attempts_time_skips_the_paid_model(tmp_path: Path) -> None:
    """Another process holds the write lock (a long write): the reservation waits no longer
    than the attempt's share of the deadline, and the free model answers; once the lock is
    released, the hold granted late is given back, never left to expire and be charged."""
    db = tmp_path / "o.db"
    config = budgeted(db)
    backend = FunctionBackend(lambda call: f"{call.model} answers")
    async with Orchestra(config, agents=[], backend=backend) as orc:
        await orc.ready()
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process's write, in progress
        asyncio.get_running_loop().call_later(1.5, other.execute, "COMMIT")
        try:
            result = await orc.complete("hello", timeout_s=1.0)
        finally:
            if other.in_transaction:
                other.execute("COMMIT")
            other.close()
        (entry,) = await orc.history(limit=1)
        summary = await orc.spend_summary()
    assert result.model == "free"
    assert [c.model for c in backend.calls] == ["free"]
    skipped = entry["attempts"][0]
    assert skipped["model"] == "paid" and skipped["error_kind"] == "budget"
    assert "could not be checked" in skipped["error"]
    assert summary["reserved_usd"] == 0.0 and summary["total_usd"] == 0.0
