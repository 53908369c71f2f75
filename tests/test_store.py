"""The store on a real SQLite file and a real PostgreSQL database (tests taking the `store`
fixture run on both): schema, batched writes, history, spend, samples, privacy."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sqlite3
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from orchestra import (
    Attempt,
    Candidate,
    Decision,
    Request,
    Result,
    StoreError,
    Tier,
    Verdict,
)
from orchestra.spend.tracker import day_start, month_start
from orchestra.store import RequestRecord, SqliteStore
from orchestra.store.record import features_of
from orchestra.store.schema import SCHEMA_VERSION, migrate

PROMPT = "zebra-quokka-7731: what is the capital of France?"
ANSWER = "sloth-answer-4412 Paris"


def raw(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read with a plain sqlite3 connection, as another process would."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def the_decision() -> Decision:
    return Decision(
        policy="default",
        candidates=(Candidate(model="e1", tier=Tier.EDGE), Candidate(model="c1", tier=Tier.CLOUD)),
        reason="vote for edge (edge 0.90)",
        target=Tier.EDGE,
        votes={Tier.EDGE: 0.9},
    )


def the_verdicts() -> tuple[Verdict, ...]:
    return (
        Verdict(
            agent="connectivity",
            target=Tier.EDGE,
            allowed=frozenset({Tier.EDGE, Tier.CLOUD}),
            confidence=0.9,
            state="online",
            reason="providers reachable",
            metrics={"rtt_ms": 12.5, "probes": ["a", "b"]},
            at=1_700_000_000.0,
        ),
        Verdict.neutral_for("complexity", "timeout", "overran its 0.05s budget"),
    )


def the_attempts() -> tuple[Attempt, ...]:
    return (
        Attempt(
            model="e1",
            tier=Tier.EDGE,
            ok=False,
            latency_ms=5.0,
            error_kind="server",
            error="HTTP 500",
            status_code=500,
        ),
        Attempt(model="c1", tier=Tier.CLOUD, ok=True, latency_ms=20.0),
    )


def make_record(
    *,
    created_at: float,
    cost: float = 0.01,
    ok: bool = True,
    model: str = "c1",
    tier: Tier = Tier.CLOUD,
    prompt: str = PROMPT,
    keep_text: bool = False,
) -> RequestRecord:
    request = Request.of(prompt)
    decision, verdicts, attempts = the_decision(), the_verdicts(), the_attempts()
    result = (
        Result(
            request_id=request.id,
            text=ANSWER,
            model=model,
            tier=tier,
            cost_usd=cost,
            latency_ms=25.0,
            prompt_tokens=10,
            completion_tokens=3,
            decision=decision,
            verdicts=verdicts,
            attempts=attempts,
            created_at=created_at,
        )
        if ok
        else None
    )
    return RequestRecord(
        request=request,
        verdicts=verdicts,
        decision=decision,
        result=result,
        attempts=attempts,
        created_at=created_at,
        latency_ms=25.0,
        error_kind=None if ok else "timeout",
        error=None if ok else "every candidate timed out",
        keep_text=keep_text,
    )


def files_of(path: Path) -> list[Path]:
    """The database file and its -wal / -shm companions."""
    return [p for p in path.parent.iterdir() if p.name.startswith(path.name)]


def db_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in files_of(path))


def garbage_file(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not sqlite at all, just text " * 100)


# -- schema ------------------------------------------------------------------------------------


@pytest.mark.sqlite_only
async def test_new_file_is_wal_at_current_schema(store: SqliteStore, db_path: Path) -> None:
    assert files_of(db_path), "the database file exists"
    assert raw(db_path, "PRAGMA journal_mode") == [("wal",)]
    assert raw(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    tables = {r[0] for r in raw(db_path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"requests", "ledger", "samples", "reservations", "spend_day", "spend_hour"} <= tables
    assert not {"verdicts", "attempts"} & tables, "a request is one row (schema 9)"


async def test_reopen_keeps_data_and_skips_migrations(db_path: Path) -> None:
    first = await SqliteStore(db_path).open()
    rec = make_record(created_at=time.time())
    first.record(rec)
    await first.close()
    schema_before = raw(db_path, "SELECT sql FROM sqlite_master ORDER BY name")

    db = sqlite3.connect(db_path, isolation_level=None)
    try:
        assert migrate(db) == SCHEMA_VERSION, "nothing left to migrate"
    finally:
        db.close()

    async with SqliteStore(db_path) as again:
        history = await again.history()
    assert [h["request_id"] for h in history] == [rec.request.id]
    assert raw(db_path, "SELECT sql FROM sqlite_master ORDER BY name") == schema_before
    assert raw(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


def newer_db(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()


async def test_newer_schema_is_refused(db_path: Path) -> None:
    newer_db(db_path)
    store = SqliteStore(db_path)
    with pytest.raises(StoreError, match="newer than this Orchestra"):
        await store.open()
    assert raw(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION + 1,)], "left untouched"
    await store.close()


async def test_failed_open_leaves_no_connection_behind(db_path: Path) -> None:
    newer_db(db_path)
    # Compare thread sets, not counts: threads left by earlier tests may end meanwhile.
    before = set(threading.enumerate())
    store = SqliteStore(db_path)
    try:
        with pytest.raises(StoreError):
            await store.open()
        assert store._db is None
        new = [t for t in threading.enumerate() if t not in before]
        for thread in new:  # aiosqlite's worker may take a moment to leave its loop after close
            thread.join(timeout=2.0)
        assert [t for t in new if t.is_alive()] == []
    finally:
        await store.close()


async def test_not_a_database_is_a_store_error(db_path: Path) -> None:
    garbage_file(db_path)
    with pytest.raises(StoreError, match=str(db_path)):
        await SqliteStore(db_path).open()


async def test_reads_on_a_closed_store_raise_store_error(db_path: Path) -> None:
    with pytest.raises(StoreError, match="not open"):
        await SqliteStore(db_path).history()


# -- writes ------------------------------------------------------------------------------------


async def test_record_only_enqueues(store: SqliteStore) -> None:
    rec = make_record(created_at=time.time())
    committed = store.record(rec)
    assert not committed.done(), "record() queues and returns at once; the writer commits"
    await committed
    assert await store.fetch("SELECT id, status FROM requests") == [(rec.request.id, "ok")]
    assert await store.fetch("SELECT COUNT(*) FROM ledger") == [(1,)]


async def test_close_flushes_pending_records(db_path: Path) -> None:
    writer = await SqliteStore(db_path).open()
    recs = [make_record(created_at=time.time() + i) for i in range(5)]
    for rec in recs:
        writer.record(rec)
    writer.record_sample(Verdict(agent="resource", state="ok"))
    await writer.close()
    async with SqliteStore(db_path) as reader:
        history = await reader.history()
        samples = await reader.samples()
    assert {h["request_id"] for h in history} == {r.request.id for r in recs}
    assert [s.agent for s in samples] == ["resource"]


async def test_writer_survives_an_unserialisable_sample(db_path: Path) -> None:
    class Reading:
        def __repr__(self) -> str:
            return "Reading()"

    store = await SqliteStore(db_path).open()
    try:
        store.record_sample(Verdict(agent="custom", metrics={"reading": Reading()}))
        await asyncio.sleep(0.02)  # the bad sample is written on its own
        rec = make_record(created_at=time.time())
        store.record(rec)
        await asyncio.wait_for(store.flush(), 2.0)
        assert [h["request_id"] for h in await store.history()] == [rec.request.id]
        await store.close()
    finally:
        with contextlib.suppress(Exception):
            await store.close()
        if store._db is not None:  # keep the connection thread from outliving the test
            await store._db.close()


# -- history -----------------------------------------------------------------------------------


async def test_history_newest_first_with_explanation(store: SqliteStore) -> None:
    now = time.time()
    recs = {age: make_record(created_at=now - age) for age in (30, 10, 20)}
    for rec in recs.values():
        store.record(rec)
    await store.flush()
    history = await store.history()
    assert [h["request_id"] for h in history] == [recs[a].request.id for a in (10, 20, 30)]

    entry = history[0]
    assert entry["status"] == "ok"
    assert entry["model"] == "c1" and entry["tier"] == "cloud"
    assert entry["cost_usd"] == pytest.approx(0.01)
    assert (entry["prompt_tokens"], entry["completion_tokens"]) == (10, 3)
    assert entry["stream"] is False
    assert entry["decision"] == json.loads(the_decision().model_dump_json())
    assert [c["model"] for c in entry["decision"]["candidates"]] == ["e1", "c1"]

    online, timeout = entry["verdicts"]
    assert online == {
        "agent": "connectivity",
        "target": "edge",
        "allowed": ["edge", "cloud"],
        "confidence": 0.9,
        "state": "online",
        "reason": "providers reachable",
        "metrics": {"rtt_ms": 12.5, "probes": ["a", "b"]},
        "at": 1_700_000_000.0,
        "stale": False,
        "neutral": False,
        "denied_models": [],
    }
    assert timeout["state"] == "timeout" and timeout["neutral"] is True
    assert timeout["target"] is None and timeout["allowed"] == ["local", "edge", "cloud"]

    failed, answered = entry["attempts"]
    assert "position" not in failed  # order is the list's order
    assert failed == {
        "model": "e1",
        "tier": "edge",
        "ok": False,
        "latency_ms": 5.0,
        "error_kind": "server",
        "error": "HTTP 500",
        "status_code": 500,
        "retry_after_s": None,
        "retry_in_s": None,
        "skipped": False,
        "cached": False,
    }
    assert answered["model"] == "c1" and answered["ok"] is True


async def test_history_limit_and_since(store: SqliteStore) -> None:
    now = time.time()
    recs = [make_record(created_at=now - age) for age in (5, 50, 500)]
    for rec in recs:
        store.record(rec)
    await store.flush()
    assert [h["request_id"] for h in await store.history(limit=2)] == [
        recs[0].request.id,
        recs[1].request.id,
    ]
    recent = await store.history(since=now - 100)
    assert {h["request_id"] for h in recent} == {recs[0].request.id, recs[1].request.id}


async def test_failed_request_is_history_but_not_spend(store: SqliteStore) -> None:
    now = time.time()
    failed = make_record(created_at=now, ok=False)
    answered = make_record(created_at=now - 1, cost=0.25)
    store.record(failed)
    store.record(answered)
    await store.flush()
    newest, older = await store.history()
    assert newest["request_id"] == failed.request.id
    assert newest["status"] == "error"
    assert newest["error_kind"] == "timeout" and newest["error"] == "every candidate timed out"
    assert newest["model"] is None and newest["cost_usd"] == 0.0
    assert [a["ok"] for a in newest["attempts"]] == [False, True]
    assert older["status"] == "ok"
    t = await store.spend_totals(now)
    assert (t.today_usd, t.month_usd) == (pytest.approx(0.25), pytest.approx(0.25))
    summary = await store.spend_summary(now)
    assert summary["answered_requests"] == 1


# -- spend -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "now",
    [
        datetime(2026, 3, 15, 12, 0).timestamp(),  # mid-month: yesterday is this month
        datetime(2026, 3, 1, 9, 30).timestamp(),  # the 1st: yesterday is last month
        time.time(),
    ],
    ids=["mid-month", "first-of-month", "now"],
)
async def test_spend_totals_today_and_month(store: SqliteStore, now: float) -> None:
    stamps = {
        "now": now,
        "day_start": day_start(now),
        "yesterday": day_start(now) - 3600,
        "month_start": month_start(now),
        "before_month": month_start(now) - 1,
        "40_days_ago": now - 40 * 86400,
    }
    costs = {"now": 1.0, "day_start": 2.0, "yesterday": 4.0, "month_start": 8.0}
    costs |= {"before_month": 16.0, "40_days_ago": 32.0}
    for key, at in stamps.items():
        store.record(make_record(created_at=at, cost=costs[key]))
    await store.flush()

    today = sum(c for k, c in costs.items() if stamps[k] >= day_start(now))
    month = sum(c for k, c in costs.items() if stamps[k] >= month_start(now))
    t = await store.spend_totals(now)
    assert (t.today_usd, t.month_usd) == (pytest.approx(today), pytest.approx(month))
    assert today >= 3.0  # now and day_start are always today
    assert 32.0 > month - today >= 0  # 40 days ago is never this month


async def test_spend_series_per_day_and_hour_with_gaps_as_zero(store: SqliteStore) -> None:
    now = datetime(2026, 5, 20, 15, 30).timestamp()
    store.record(make_record(created_at=now, cost=0.5))
    store.record(make_record(created_at=now - 600, cost=0.25, model="c2"))
    store.record(make_record(created_at=now - 3600, cost=1.0))  # 14:30, the hour before
    store.record(make_record(created_at=now - 2 * 86400, cost=2.0))
    store.record(make_record(created_at=now - 40 * 86400, cost=8.0))  # before the window
    store.record(make_record(created_at=now + 86400, cost=4.0))  # a clock stepped back: today
    store.record(make_record(created_at=now, ok=False))
    await store.flush()
    series = await store.spend_series(days=7, now=now)
    days = [(d["day"], d["cost_usd"], d["answers"]) for d in series["days"]]
    assert [d[0] for d in days] == [f"2026-05-{n}" for n in range(14, 21)]
    assert days[-1] == ("2026-05-20", pytest.approx(5.75), 4)
    assert days[-3] == ("2026-05-18", pytest.approx(2.0), 1)
    assert sum(d[1] for d in days) == pytest.approx(7.75)
    hours = series["hours"]
    assert len(hours) == 48 and (hours[-1]["day"], hours[-1]["hour"]) == ("2026-05-20", 15)
    assert (hours[0]["day"], hours[0]["hour"]) == ("2026-05-18", 16)
    assert hours[-1]["cost_usd"] == pytest.approx(0.75)
    assert hours[-2]["cost_usd"] == pytest.approx(1.0)
    assert sum(h["cost_usd"] for h in hours) == pytest.approx(1.75)
    assert (await store.spend_totals(now)).today_usd == pytest.approx(days[-1][1])


async def test_spend_summary(store: SqliteStore) -> None:
    now = datetime(2026, 5, 20, 15, 0).timestamp()
    store.record(make_record(created_at=now, cost=0.5, model="c1"))
    store.record(make_record(created_at=now - 86400, cost=0.25, model="c1"))
    store.record(make_record(created_at=now - 2 * 86400, cost=1.0, model="c2"))
    store.record(make_record(created_at=now, cost=0.0, model="l1", tier=Tier.LOCAL))
    store.record(make_record(created_at=now - 60 * 86400, cost=3.0, model="c1"))
    store.record(make_record(created_at=now, ok=False))
    await store.flush()
    summary = await store.spend_summary(now)
    assert summary["today_usd"] == pytest.approx(0.5)
    assert summary["month_usd"] == pytest.approx(1.75)
    assert summary["total_usd"] == pytest.approx(4.75)
    assert summary["answered_requests"] == 5
    by_model = [(m["model"], m["tier"], m["requests"]) for m in summary["month_by_model"]]
    assert by_model == [("c2", "cloud", 1), ("c1", "cloud", 2), ("l1", "local", 1)]
    c1 = summary["month_by_model"][1]
    assert c1["cost_usd"] == pytest.approx(0.75)
    assert (c1["prompt_tokens"], c1["completion_tokens"]) == (20, 6)


# -- privacy -----------------------------------------------------------------------------------


async def test_prompt_not_stored_by_default(db_path: Path) -> None:
    rec = make_record(created_at=time.time())
    async with SqliteStore(db_path) as store:
        store.record(rec)
        await store.flush()
        (entry,) = await store.history()
        assert PROMPT.encode() not in db_bytes(db_path)
    assert PROMPT.encode() not in db_bytes(db_path)
    assert ANSWER.encode() not in db_bytes(db_path)
    ((digest, features, prompt, response),) = raw(
        db_path, "SELECT prompt_sha256, features, prompt, response FROM requests"
    )
    assert prompt is None and response is None
    transcript = json.dumps([m.model_dump() for m in rec.request.messages], ensure_ascii=False)
    assert digest == hashlib.sha256(transcript.encode()).digest()[:16]
    expected_features = {"chars": len(PROMPT), "words": 7, "lines": 1, "messages": 1}
    assert features_of(features) == expected_features
    assert entry["features"] == expected_features
    assert entry["features"] == expected_features


async def test_prompt_stored_with_keep_text(db_path: Path) -> None:
    async with SqliteStore(db_path) as store:
        store.record(make_record(created_at=time.time(), keep_text=True))
    assert PROMPT.encode() in db_bytes(db_path)
    ((prompt, response),) = raw(db_path, "SELECT prompt, response FROM requests")
    assert json.loads(prompt) == [{"role": "user", "content": PROMPT}]
    assert response == ANSWER


# -- samples -----------------------------------------------------------------------------------


async def test_samples_round_trip(store: SqliteStore) -> None:
    base = time.time()
    older = Verdict(
        agent="resource", target=Tier.LOCAL, confidence=0.3, metrics={"cpu": 12.5}, at=base - 2
    )
    newer = Verdict(agent="resource", target=Tier.EDGE, state="busy", at=base - 1)
    net = Verdict(agent="connectivity", allowed=frozenset({Tier.LOCAL}), state="offline", at=base)
    for v in (older, net, newer):
        store.record_sample(v)
    await store.flush()
    assert await store.samples() == [net, newer, older]
    assert await store.samples(agent="resource") == [newer, older]
    assert await store.samples(agent="resource", limit=1) == [newer]
    assert await store.samples(agent="nobody") == []


# -- two processes -----------------------------------------------------------------------------


async def test_two_stores_on_one_file(db_path: Path) -> None:
    writer = await SqliteStore(db_path).open()
    reader = await SqliteStore(db_path).open()
    try:
        now = time.time()
        recs = [make_record(created_at=now + i * 0.001) for i in range(40)]

        async def write() -> None:
            for i, rec in enumerate(recs):
                writer.record(rec)
                if i % 8 == 7:
                    await writer.flush()
            await writer.flush()

        async def read() -> list[int]:
            seen = []
            for _ in range(10):
                seen.append(len(await reader.history(limit=100)))
                await reader.spend_totals()
                await asyncio.sleep(0)
            return seen

        _, counts = await asyncio.gather(write(), read())
        assert counts == sorted(counts), "a reader only ever sees more rows"
        assert len(await reader.history(limit=100)) == 40
        assert len(await writer.history(limit=100)) == 40
        today = (await reader.spend_totals(now)).today_usd
        assert today == pytest.approx(0.4)
    finally:
        await writer.close()
        await reader.close()


def test_a_version_7_history_reads_the_same_after_migration(tmp_path: Path) -> None:
    """Schema 9 folds the verdicts and attempts tables into each request's `detail`."""
    from orchestra.store.schema import _SQL_MIGRATIONS, statements

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for script in _SQL_MIGRATIONS:
        for statement in statements(script):
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {len(_SQL_MIGRATIONS)}")
    decision, verdicts = the_decision(), the_verdicts()
    conn.execute(
        f"INSERT INTO requests VALUES ({', '.join('?' * 20)})",
        ("r1", 100.0, "ok", "c1", "cloud", 0.01, 25.0, 10, 3, "ab" * 32,
         '{"chars": 5, "words": 1, "lines": 1, "messages": 1}', None, None, None, None, 0,
         "default", decision.model_dump_json(), None, None),
    )  # fmt: skip
    for i, v in enumerate(verdicts):
        conn.execute(
            "INSERT INTO verdicts (request_id, position, agent, target, allowed, confidence,"
            " state, reason, metrics, at, stale, neutral, denied_models)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ("r1", i, v.agent, v.target.value if v.target else None,
             json.dumps([t.value for t in sorted(v.allowed)]), v.confidence, v.state, v.reason,
             json.dumps(v.metrics), v.at, int(v.stale), int(v.neutral), "[]"),
        )  # fmt: skip
    for i, a in enumerate(the_attempts()):
        conn.execute(
            "INSERT INTO attempts (request_id, position, model, tier, ok, latency_ms, error_kind,"
            " error, status_code) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ("r1", i, a.model, a.tier.value, int(a.ok), a.latency_ms, a.error_kind, a.error,
             a.status_code),
        )  # fmt: skip
    conn.close()

    async def read() -> list[dict[str, Any]]:
        async with SqliteStore(path) as store:
            return await store.history()

    (entry,) = asyncio.run(read())
    assert raw(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert entry["decision"] == decision.model_dump(mode="json")
    assert entry["verdicts"] == [v.model_dump(mode="json") for v in verdicts]
    assert entry["attempts"] == [a.model_dump(mode="json") for a in the_attempts()]
    tables = {r[0] for r in raw(path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert not {"verdicts", "attempts"} & tables
