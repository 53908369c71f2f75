"""Feedback on answers: recorded in the store (append only), shown in history, kept secret-free."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import STUB_KEY, model_toml

from orchestra import Feedback, Orchestra, RequestError, StoreError, SyncOrchestra
from orchestra.core.feedback import MIN_PREFIX
from orchestra.core.paths import default_db_path
from orchestra.runtime import record_feedback
from orchestra.store import SqliteStore
from orchestra.testing import StubProvider


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.fixture
def config(stub: StubProvider, write_config: Callable[..., Path]) -> Path:
    return write_config(model_toml("stub-local", stub.url, tier="local"))


async def test_feedback_is_stored_and_shown_in_history(config: Path) -> None:
    async with Orchestra(config=config) as orc:
        first = await orc.complete("What is 17 * 23?")
        second = await orc.complete("hi there")
        given = await orc.feedback(first.request_id, good=False, note="it said 381")
        history = await orc.history()
    assert isinstance(given, Feedback)
    assert (given.request_id, given.good, given.note) == (first.request_id, False, "it said 381")
    assert (given.model, given.tier) == ("stub-local", "local")
    by_id = {e["request_id"]: e for e in history}
    assert by_id[first.request_id]["feedback"]["good"] is False
    assert by_id[first.request_id]["feedback"]["note"] == "it said 381"
    assert by_id[second.request_id]["feedback"] is None
    assert rows(default_db_path(), "SELECT request_id, good, note FROM feedback") == [
        (first.request_id, 0, "it said 381")
    ]


async def test_feedback_is_append_only_and_the_newest_counts(config: Path) -> None:
    async with Orchestra(config=config) as orc:
        result = await orc.complete("What is 2 + 2?")
        await orc.feedback(result.request_id, good=False)
        await orc.feedback(result.request_id, good=True, note="changed my mind")
        history = await orc.history()
    assert history[0]["feedback"]["good"] is True
    stored = rows(default_db_path(), "SELECT good, note FROM feedback ORDER BY id")
    assert stored == [(0, None), (1, "changed my mind")], "both kept, in order"


async def test_feedback_by_unique_prefix_and_clear_errors(config: Path) -> None:
    async with Orchestra(config=config) as orc:
        result = await orc.complete("What is the capital of France?")
        given = await orc.feedback(result.request_id[:12], good=True)
        assert given.request_id == result.request_id
        with pytest.raises(RequestError, match="no recorded request 'ffffffffffff'"):
            await orc.feedback("ffffffffffff", good=False)
        with pytest.raises(RequestError, match=f"at least {MIN_PREFIX} characters"):
            await orc.feedback(result.request_id[:3], good=False)
        with pytest.raises(RequestError, match="request id is required"):
            await orc.feedback("  ", good=False)
        with pytest.raises(RequestError, match="True or False"):
            await orc.feedback(result.request_id, good="yes")  # type: ignore[arg-type]
    assert len(rows(default_db_path(), "SELECT * FROM feedback")) == 1, "errors wrote nothing"


async def test_an_ambiguous_prefix_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    async with SqliteStore(db) as store:
        pass  # creates the schema
    conn = sqlite3.connect(db)
    for rid in ("abcdef01", "abcdef02"):
        conn.execute(
            "INSERT INTO requests (id, created_at, status, prompt_sha256, features)"
            " VALUES (?, 0, 'ok', '', '{}')",
            (rid,),
        )
    conn.commit()
    conn.close()
    async with SqliteStore(db) as store:
        with pytest.raises(RequestError, match="matches several requests"):
            await record_feedback(store, "abcdef", good=True)
        assert (await record_feedback(store, "abcdef02", good=True)).request_id == "abcdef02"


async def test_a_failed_write_is_never_reported_as_recorded(config: Path) -> None:
    async with Orchestra(config=config) as orc:
        result = await orc.complete("What is 2 + 2?")
        await orc.flush()
        conn = sqlite3.connect(default_db_path())
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON feedback"
            " BEGIN SELECT RAISE(ABORT, 'the disk says no'); END"
        )
        conn.commit()
        conn.close()
        with pytest.raises(StoreError, match="the disk says no"):
            await orc.feedback(result.request_id, good=False)
        history = await orc.history()
    assert history[0]["feedback"] is None


async def test_secrets_in_a_note_never_reach_the_database(config: Path) -> None:
    async with Orchestra(config=config) as orc:
        result = await orc.complete("hello")
        given = await orc.feedback(result.request_id, good=False, note=f"key {STUB_KEY} leaked")
    assert STUB_KEY not in (given.note or "")
    assert rows(default_db_path(), "SELECT note FROM feedback") == [("key *** leaked",)]


async def test_feedback_survives_a_restart(config: Path) -> None:
    async with Orchestra(config=config) as orc:
        result = await orc.complete("What is 12 squared?")
        await orc.feedback(result.request_id, good=False)
    async with Orchestra(config=config) as orc:
        history = await orc.history()
    assert history[0]["feedback"]["good"] is False


async def test_concurrent_feedback_loses_nothing(config: Path) -> None:
    async with Orchestra(config=config) as orc:
        results = await asyncio.gather(*(orc.complete(f"What is {i} + {i}?") for i in range(20)))
        await asyncio.gather(
            *(orc.feedback(r.request_id, good=i % 2 == 0) for i, r in enumerate(results))
        )
    assert rows(default_db_path(), "SELECT COUNT(*), SUM(good) FROM feedback") == [(20, 10)]


def test_sync_wrapper_gives_feedback(config: Path) -> None:
    with SyncOrchestra(config) as orc:
        result = orc.complete("What is the capital of France?")
        given = orc.feedback(result.request_id, good=True)
        assert orc.history()[0]["feedback"]["good"] is True
    assert given.good is True
