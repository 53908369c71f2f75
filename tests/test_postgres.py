"""The PostgreSQL store on a real server: schema and migrations, the ledger across processes,
breakers shared, degraded mode with the spill file, and an outage in the middle of a run.

The store's own suite (tests/test_store.py and the other users of the `store` fixture) runs on
PostgreSQL too; this file holds what only PostgreSQL has.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from ledger_child import (
    ANSWER_TOKENS,
    PROMPT,
    STUB_REPLY,
    WantsCloud,
    call_cost,
    exact,
    stub_cost,
)
from ledger_child import config as child_config
from postgres_fixture import LocalServer, Postgres, find_bindir
from test_store import make_record

from orchestra import Orchestra, StoreError
from orchestra.core.errors import StoreUnavailable
from orchestra.core.tier import Tier
from orchestra.spend.ledger import Ask, Charge, Hold, Refusal
from orchestra.store import PostgresOptions, RequestRecord, Timeouts, open_store
from orchestra.store.postgres import PostgresStore, masked
from orchestra.store.postgres_db import migrate
from orchestra.store.schema import SCHEMA_VERSION
from orchestra.testing import Behaviour, FunctionBackend, StubProvider

CHILD = Path(__file__).with_name("ledger_child.py")


async def rows(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


def options(home: Path, **kw: Any) -> PostgresOptions:
    quick = Timeouts(connect_s=1.0, statement_s=5.0)
    return PostgresOptions(spill_path=home / "spill.db", timeouts=quick, **kw)


def ask(usd: float, daily: float | None = 1.0, lease_s: float = 60.0) -> Ask:
    return Ask(model="c1", tier=Tier.CLOUD, request_id="r", min_usd=usd, want_usd=usd,
               daily_usd=daily, monthly_usd=None, lease_s=lease_s)  # fmt: skip


@pytest.fixture
def empty_pg(postgres: Postgres) -> Iterator[str]:
    """A database with nothing in it (not even the schema)."""
    url = postgres.new_database()
    asyncio.run(_empty(url))
    yield url
    postgres.drop_database(url)


async def _empty(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()


# -- schema ------------------------------------------------------------------------------------


async def test_a_new_database_gets_the_whole_schema_and_its_own_version_table(
    empty_pg: str, tmp_path: Path
) -> None:
    async with PostgresStore(empty_pg, options(tmp_path)) as store:
        await store.record(make_record(created_at=time.time()))
    assert await rows(empty_pg, "SELECT version FROM orchestra_schema") == [(SCHEMA_VERSION,)]
    tables = {r[0] for r in await rows(
        empty_pg, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}  # fmt: skip
    assert {"requests", "shared", "ledger", "reservations", "spend_day", "spend_hour", "samples",
            "breaker_state", "breaker_events", "response_cache", "feedback",
            "models"} <= tables  # fmt: skip
    assert not {"verdicts", "attempts"} & tables, "a request is one row, as on SQLite"
    conn = await asyncpg.connect(empty_pg)
    try:
        assert await migrate(conn) == SCHEMA_VERSION, "nothing left to migrate"
    finally:
        await conn.close()


async def test_a_version_9_database_keeps_its_prompt_hashes_as_16_bytes(
    empty_pg: str, tmp_path: Path
) -> None:
    """Schema 10: `prompt_sha256` becomes BYTEA, the first 16 bytes of each stored hex digest."""
    from orchestra.store.postgres_schema import BASELINE

    conn = await asyncpg.connect(empty_pg)
    try:
        await conn.execute(BASELINE)
        await conn.execute("CREATE TABLE orchestra_schema (version INTEGER NOT NULL)")
        await conn.execute("INSERT INTO orchestra_schema VALUES (9)")
        await conn.execute(
            "INSERT INTO requests (id, created_at, status, prompt_sha256, features)"
            " VALUES ('old', 1.0, 'error', $1, '[1,1,1,1]')",
            "ab" * 32,
        )
    finally:
        await conn.close()
    async with PostgresStore(empty_pg, options(tmp_path)) as store:
        await store.record(make_record(created_at=time.time()))
        history = await store.history()
    assert [h["request_id"] for h in history][-1] == "old"
    assert await rows(empty_pg, "SELECT version FROM orchestra_schema") == [(SCHEMA_VERSION,)]
    hashes = await rows(empty_pg, "SELECT id, prompt_sha256 FROM requests ORDER BY created_at")
    assert hashes[0] == ("old", b"\xab" * 16)
    assert isinstance(hashes[1][1], bytes) and len(hashes[1][1]) == 16


async def test_a_record_spilled_before_schema_10_is_written_with_its_hash_as_bytes(
    pg_url: str,
) -> None:
    from orchestra.spend.calendar import calendar
    from orchestra.store.postgres_writer import apply_payloads
    from orchestra.store.record import request_row

    rec = make_record(created_at=time.time())
    row = list(request_row(rec, b""))
    row[9] = "cd" * 32  # as a version before schema 10 spilled it
    conn = await asyncpg.connect(pg_url)
    try:
        async with conn.transaction():
            payload = {"request": rec.request.id, "rows": {"request": [row]}}
            assert await apply_payloads(conn, calendar(), [payload], drain=True) == 1
    finally:
        await conn.close()
    found = await rows(pg_url, "SELECT prompt_sha256 FROM requests WHERE id = $1", rec.request.id)
    assert found == [(b"\xcd" * 16,)]


async def test_many_stores_opening_a_fresh_database_together_migrate_it_once(
    empty_pg: str, tmp_path: Path
) -> None:
    stores = [PostgresStore(empty_pg, options(tmp_path)) for _ in range(8)]
    await asyncio.gather(*(s.open() for s in stores))
    for s in stores:
        await s.close()
    assert await rows(empty_pg, "SELECT version FROM orchestra_schema") == [(SCHEMA_VERSION,)]


async def test_a_newer_schema_is_refused(pg_url: str, tmp_path: Path) -> None:
    await rows(pg_url, "UPDATE orchestra_schema SET version = $1", SCHEMA_VERSION + 1)
    with pytest.raises(StoreUnavailable, match="newer than this Orchestra"):
        await PostgresStore(pg_url, options(tmp_path)).open()


async def test_a_wrong_database_is_a_store_error_naming_it_without_its_password(
    postgres: Postgres, tmp_path: Path
) -> None:
    from postgres_fixture import with_database

    url = with_database(postgres.url, "no_such_database").replace("postgres@", "postgres:s3cret@")
    with pytest.raises(StoreUnavailable, match="no_such_database") as raised:
        await PostgresStore(url, options(tmp_path)).open()
    assert "s3cret" not in str(raised.value) and "***" in str(raised.value)
    assert masked("postgresql://me:s3cret@db:5432/x") == "postgresql://me:***@db:5432/x"
    assert masked("postgresql://db/x?sslmode=require&password=s3cret") == (
        "postgresql://db/x?sslmode=require&password=***"
    )


def test_a_store_url_env_that_is_not_postgresql_is_refused_without_its_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A mistyped `$ORCHESTRA_STORE_URL` was taken for a SQLite path: the history went to a
    file named after the URL, its password in the folder's name."""
    from orchestra.config import parse_config
    from orchestra.core.errors import ConfigError
    from orchestra.runtime import build_store

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ORCHESTRA_STORE_URL", "postgresq://me:s3cret@db/x")
    with pytest.raises(ConfigError, match="ORCHESTRA_STORE_URL") as raised:
        build_store(parse_config({}))
    assert "s3cret" not in str(raised.value)
    assert list(tmp_path.iterdir()) == []
    assert masked("postgresql://me:p@ss@db/x") == "postgresql://me:***@db/x"


def test_a_run_on_sqlite_never_imports_the_postgresql_driver(tmp_path: Path) -> None:
    code = (
        "import asyncio, sys\n"
        "from orchestra import Orchestra\n"
        "from orchestra.config import parse_config\n"
        "from orchestra.testing import FunctionBackend\n"
        f"conf = parse_config({{'embedded': {{'enabled': False}}, 'store': {{'path': "
        f"{str(tmp_path / 'o.db')!r}}}, 'models': [{{'name': 'm', 'tier': 'local', "
        "'litellm_model': 'openai/m'}]})\n"
        "async def main():\n"
        "    async with Orchestra(conf, backend=FunctionBackend(lambda c: 'hi')) as orc:\n"
        "        assert (await orc.complete('hello')).text == 'hi'\n"
        "asyncio.run(main())\n"
        "assert 'asyncpg' not in sys.modules, 'asyncpg imported'\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ORCHESTRA_STORE_URL"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr


def test_the_config_chooses_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestra.config import parse_config
    from orchestra.runtime import build_store

    sqlite = build_store(parse_config({}))
    assert type(sqlite).__name__ == "SqliteStore"
    conf = parse_config({"store": {"url": "postgresql://u@db/x", "pool_size": 3}})
    pg = build_store(conf)
    assert isinstance(pg, PostgresStore) and pg.options.pool_size == 3
    monkeypatch.setenv("ORCHESTRA_STORE_URL", "postgresql://u@other/y")
    env = build_store(parse_config({}))
    assert isinstance(env, PostgresStore) and env.url.endswith("/y")


# -- the ledger across stores --------------------------------------------------------------------


async def test_stores_sharing_a_database_never_reserve_past_the_budget(
    pg_url: str, tmp_path: Path
) -> None:
    stores = [await PostgresStore(pg_url, options(tmp_path)).open() for _ in range(4)]
    try:
        granted = await asyncio.gather(*(s.reserve(ask(0.01)) for s in stores for _ in range(50)))
        holds = [g for g in granted if isinstance(g, Hold)]
        assert len(holds) == 100, "exactly what $1 covers, however the asks interleave"
        assert all(isinstance(g, Refusal) for g in granted if not isinstance(g, Hold))
        (reserved,) = (await rows(pg_url, "SELECT SUM(usd) FROM reservations"))[0]
        assert reserved == pytest.approx(1.0)
    finally:
        for s in stores:
            await s.close()


async def test_a_dead_hosts_reservation_expires_as_lost_and_its_charge_replaces_it(
    pg_url: str, tmp_path: Path
) -> None:
    async with PostgresStore(pg_url, options(tmp_path)) as store:
        held = await store.reserve(ask(0.25, lease_s=0.05))
        assert isinstance(held, Hold)
        await asyncio.sleep(0.1)
        other = await store.reserve(ask(0.5))  # expires the first one as it books
        assert isinstance(other, Hold)
        lost = await rows(pg_url, "SELECT cost_usd, kind FROM ledger WHERE reservation_id = $1",
                          held.id)  # fmt: skip
        assert lost == [(0.25, "lost")]
        assert (await store.spend_totals()).today_usd == pytest.approx(0.25)
        # The call was alive after all: its real charge takes the lost one's place.
        charge = Charge(model="c1", tier=Tier.CLOUD, prompt_tokens=1, completion_tokens=1,
                        cost_usd=0.1, hold_id=held.id)  # fmt: skip
        rec = make_record(created_at=time.time(), cost=0.1)
        await store.record(_with_charges(rec, charge))
        assert (await store.spend_totals()).today_usd == pytest.approx(0.1)
        assert await rows(pg_url, "SELECT kind FROM ledger WHERE reservation_id = $1",
                          held.id) == [("answer",)]  # fmt: skip


def _with_charges(rec: RequestRecord, *charges: Charge) -> RequestRecord:
    from dataclasses import replace

    return replace(rec, charges=charges)


def spawn(*args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )


@pytest.mark.slow
def test_four_processes_on_postgres_pay_for_at_most_what_the_budget_covers(
    pg_url: str, tmp_path: Path
) -> None:
    """4 processes x 100 concurrent requests through LiteLLM to stub providers on 127.0.0.1;
    the budget covers exactly 150 paid calls (the stub bills exactly what is reserved)."""
    covered = 150
    budget = (covered + 0.5) * stub_cost()
    stub = StubProvider(Behaviour(reply=STUB_REPLY)).start()
    try:
        children = [spawn("stub", tmp_path, 100, budget, pg_url, stub.url) for _ in range(4)]
        summaries = []
        for child in children:
            out, err = child.communicate(timeout=300)
            assert child.returncode == 0, err
            summaries.append(json.loads(out))
        paid_calls = sum((r.get("body") or {}).get("model") == "paid" for r in stub.requests)
    finally:
        stub.stop()
    paid = sum(s["paid"] for s in summaries)
    assert paid <= covered and paid == paid_calls, summaries
    assert paid == covered, "every honest reservation that fits is granted"
    assert sum(s["answered"] for s in summaries) == 400, "the rest answered locally"

    async def check() -> None:
        ((total, count),) = await rows(pg_url, "SELECT SUM(cost_usd), COUNT(*) FROM ledger")
        assert total <= budget
        assert total == pytest.approx(sum(s["cost"] for s in summaries)), "ledger == answers"
        assert count == covered, "a row per paid call"
        assert await rows(pg_url, "SELECT SUM(answers) FROM spend_day") == [(400,)]
        assert await rows(pg_url, "SELECT COUNT(*) FROM reservations") == [(0,)]
        assert await rows(pg_url, "SELECT COUNT(*) FROM requests") == [(400,)]

    asyncio.run(check())


# -- breakers ------------------------------------------------------------------------------------


async def test_a_breaker_one_process_opens_is_seen_open_by_another(pg_url: str) -> None:
    """Another process (a child) finds "flaky" down; this one, running meanwhile, skips it."""
    from test_shared_breakers import config as breaker_config

    conf = breaker_config(Path("unused.db"))
    conf = conf.model_copy(update={"store": conf.store.model_copy(update={"url": pg_url})})
    healthy = FunctionBackend(lambda call: f"{call.model} answers")
    async with Orchestra(conf, agents=[], backend=healthy) as here:
        assert (await here.complete("hello")).model == "flaky"
        child = spawn("breaker", pg_url)
        out, err = await asyncio.to_thread(child.communicate, timeout=120)
        assert child.returncode == 0, err
        assert json.loads(out)[0] == "server", "the child's call to flaky failed"
        assert here.executor is not None and here.executor.safeguards.breakers
        for _ in range(40):  # refreshed from the store every second
            if here.executor.safeguards.breakers.get("flaky").state == "open":
                break
            await asyncio.sleep(0.1)
        after = await here.complete("hello")
    assert after.model == "spare"
    assert (after.attempts[0].error_kind, after.attempts[0].skipped) == ("breaker_open", True)
    assert [c.model for c in healthy.calls] == ["flaky", "spare"], "flaky was not called again"


# -- degraded: the database unreachable ----------------------------------------------------------


async def test_unreachable_at_open_answers_degraded_and_spills(tmp_path: Path) -> None:
    url = f"postgresql://postgres@/orchestra?host={tmp_path / 'nowhere'}"
    store = await PostgresStore(url, options(tmp_path)).open()
    try:
        assert store.degraded
        await store.record(make_record(created_at=time.time(), cost=0.02))
        refused = await store.reserve(ask(0.01))
        assert isinstance(refused, Refusal), "no shared total ever read: no paid call"
        summary = await store.spend_summary()
        assert summary["degraded"] is True and summary["spill_pending"] == 1
        assert summary["today_usd"] == pytest.approx(0.02)
    finally:
        await store.close()
    assert (tmp_path / "spill.db").exists()


@pytest.fixture(scope="module")
def own_server() -> Iterator[LocalServer]:
    """A server of this module's own, to stop and start (the session's may be CI's)."""
    bindir = find_bindir()
    if bindir is None:
        if os.environ.get("ORCHESTRA_CI") == "1":
            pytest.fail("PostgreSQL is not installed; CI must run the outage tests")
        pytest.skip("PostgreSQL is not installed (no initdb)")
    server = LocalServer(bindir, Path(tempfile.mkdtemp(prefix="orchestra-pg-own-")), port=5433)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(server.base, ignore_errors=True)


@pytest.fixture
async def outage_url(own_server: LocalServer) -> AsyncIterator[str]:
    from postgres_fixture import _admin, with_database

    await _admin(own_server.url, "DROP DATABASE IF EXISTS outage", "CREATE DATABASE outage")
    yield with_database(own_server.url, "outage")


async def test_postgres_stopped_mid_run_and_restarted_loses_nothing(
    own_server: LocalServer, outage_url: str, tmp_path: Path
) -> None:
    """Requests keep being answered while the server is down; their records wait in the spill
    file and reach the database when it is back: every answer returned is there, once."""
    budget = 1000 * call_cost()
    conf = child_config(tmp_path, budget, outage_url)
    conf = conf.model_copy(
        update={"store": conf.store.model_copy(update={"connect_timeout_s": 1.0})}
    )
    returned: list[Any] = []
    async with Orchestra(conf, agents=[WantsCloud()], backend=FunctionBackend(exact)) as orc:
        store = orc._require_store()
        assert isinstance(store, PostgresStore)

        async def burst(n: int) -> None:
            results = await asyncio.gather(
                *(orc.complete(f"{PROMPT} {len(returned)}.{i}", max_tokens=ANSWER_TOKENS)
                  for i in range(n))
            )  # fmt: skip
            returned.extend(results)

        await burst(20)
        await asyncio.to_thread(own_server.stop)
        for _ in range(3):
            await burst(10)  # answered while the database is down
        assert store.degraded
        spilled = (await orc.spend_summary())["spill_pending"]
        assert spilled >= 30
        paid_offline = sum(r.model == "paid" for r in returned[20:])
        # While degraded, this process (alone) may spend what was left: it pays, within it.
        assert paid_offline > 0
        await asyncio.to_thread(own_server.restart)
        for _ in range(100):
            await asyncio.sleep(0.1)
            if not store.degraded:
                break
        assert not store.degraded, "back within a few seconds of the server"
        await burst(10)
        summary = await orc.spend_summary()
    assert summary["spill_pending"] == 0, "the spill file is drained"
    ids = {r.request_id for r in returned}
    stored = {r[0] for r in await rows(outage_url, "SELECT id FROM requests")}
    assert ids == stored, f"missing: {len(ids - stored)}, extra: {len(stored - ids)}"
    ((total, paid_rows),) = await rows(
        outage_url, "SELECT COALESCE(SUM(cost_usd), 0), COUNT(*) FROM ledger WHERE kind = 'answer'"
    )
    assert total == pytest.approx(sum(r.cost_usd for r in returned)), "ledger == answers"
    assert paid_rows == sum(r.model == "paid" for r in returned), "each charged once"
    assert await rows(outage_url, "SELECT SUM(answers) FROM spend_day") == [(len(returned),)]
    assert await rows(outage_url, "SELECT COUNT(*) FROM reservations") == [(0,)]


async def test_degraded_hosts_share_what_was_left(pg_url: str, tmp_path: Path) -> None:
    """Cut off, each host (a spill file of its own) may spend only its share of what the budget
    had left (the processes of one host share theirs: tests/test_postgres_offline_share.py)."""
    store = await PostgresStore(pg_url, options(tmp_path / "a")).open()
    other = await PostgresStore(pg_url, options(tmp_path / "b")).open()
    try:
        await store.record(_with_charges(make_record(created_at=time.time(), cost=0.4),
                                         Charge(model="c1", tier=Tier.CLOUD, prompt_tokens=1,
                                                completion_tokens=1, cost_usd=0.4)))  # fmt: skip
        await store._refresh()  # reads the totals and sees two hosts
        assert store._clients == 2
        store._link.lost(OSError("cable cut"))
        # $1 a day, $0.40 spent: $0.60 left, two hosts: $0.30 for this one.
        assert isinstance(await store.reserve(ask(0.2)), Hold)
        assert isinstance(await store.reserve(ask(0.1)), Hold)
        refused = await store.reserve(ask(0.01))
        assert isinstance(refused, Refusal) and refused.left_usd == pytest.approx(0.0, abs=1e-9)
        assert (await store.spend_summary())["degraded"] is True
    finally:
        await store.close()
        await other.close()


async def test_holds_granted_after_the_last_totals_read_count_while_degraded(
    pg_url: str, tmp_path: Path
) -> None:
    """A reservation granted online, after the totals were last read, is still out when the
    database goes away: the budget left offline must not count it as free."""
    store = await PostgresStore(pg_url, options(tmp_path)).open()
    try:
        await store._refresh()  # the last shared totals read: nothing spent, nothing held
        assert isinstance(await store.reserve(ask(0.6)), Hold)  # $1 a day: $0.40 left
        store._link.lost(OSError("cable cut"))
        refused = await store.reserve(ask(0.6))
        assert isinstance(refused, Refusal), "$0.60 more would spend $1.20 of a $1 budget"
        assert isinstance(await store.reserve(ask(0.4)), Hold), "what was left is still there"
    finally:
        await store.close()


async def test_a_spilled_write_the_database_refuses_is_kept_aside_not_deleted(
    pg_url: str, tmp_path: Path
) -> None:
    async with PostgresStore(pg_url, options(tmp_path)) as store:
        good = {"rows": {"sample": [["resource", 1.0, "ok", "{}"]]}}
        bad = {"rows": {"sample": [[None, 1.0, "ok", "{}"]]}}  # samples.agent is NOT NULL
        await asyncio.to_thread(
            store._spill.append, [("write", good), ("write", bad)], [True, True]
        )
        await store._w().run(store._w().drain)
        waiting, _, quarantined = await asyncio.to_thread(store._spill.counts)
        assert (waiting, quarantined) == (0, 1), "the refused entry stays in the file, aside"
        assert await rows(pg_url, "SELECT agent FROM samples") == [("resource",)]
        summary = await store.spend_summary()
        assert (summary["spill_pending"], summary["spill_kept_aside"]) == (0, 1), "and is said"


async def test_a_process_started_during_an_outage_counts_what_earlier_ones_spilled(
    pg_url: str, tmp_path: Path
) -> None:
    """One process after another on a host cut off (CLI runs, a restart): each knows the
    shared totals last read, and must also count what those before it spent since."""
    async with PostgresStore(pg_url, options(tmp_path)):
        pass  # reads the totals ($1 a day, nothing spent) and keeps them in the spill file
    down = f"postgresql://postgres@/orchestra?host={tmp_path / 'nowhere'}"
    first = await PostgresStore(down, options(tmp_path)).open()
    try:
        held = await first.reserve(ask(0.6))
        assert isinstance(held, Hold)
        charge = Charge(model="c1", tier=Tier.CLOUD, prompt_tokens=1, completion_tokens=1,
                        cost_usd=0.6, hold_id=held.id)  # fmt: skip
        await first.record(_with_charges(make_record(created_at=time.time(), cost=0.6), charge))
    finally:
        await first.close()
    second = await PostgresStore(down, options(tmp_path)).open()
    try:
        assert second.degraded
        refused = await second.reserve(ask(0.6))
        assert isinstance(refused, Refusal), "$0.60 spilled + $0.60 is past the $1 budget"
        assert isinstance(await second.reserve(ask(0.4)), Hold), "what was left is still there"
    finally:
        await second.close()


async def test_spill_file_is_capped(tmp_path: Path) -> None:
    url = f"postgresql://postgres@/orchestra?host={tmp_path / 'nowhere'}"
    store = await PostgresStore(url, options(tmp_path, spill_max_bytes=4000)).open()
    try:
        kept = 0
        with pytest.raises(StoreError, match=r"spill file .* is full"):
            for _ in range(100):
                await store.record(make_record(created_at=time.time()))
                kept += 1
        assert 0 < kept < 100
    finally:
        await store.close()


async def test_open_store_picks_postgres_for_a_url(pg_url: str, tmp_path: Path) -> None:
    store = open_store(pg_url, home=tmp_path)
    assert isinstance(store, PostgresStore)
    assert store.options.spill_path == tmp_path / "spill.db"


def test_spend_says_it_is_degraded_when_the_database_is_unreachable(tmp_path: Path) -> None:
    env = {**os.environ, "ORCHESTRA_STORE_URL": f"postgresql://postgres@/x?host={tmp_path}"}
    env["ORCHESTRA_CONFIG"] = str(tmp_path / "orchestra.toml")
    (tmp_path / "orchestra.toml").write_text(
        "[embedded]\nenabled = false\n[store]\nconnect_timeout_s = 1.0\n"
    )

    def spend(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orchestra.cli.main", "spend", *args],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip

    as_json = spend("--json")
    assert as_json.returncode == 0, as_json.stderr
    summary = json.loads(as_json.stdout)
    assert summary["degraded"] is True and summary["spill_pending"] == 0
    table = spend()
    assert table.returncode == 0, table.stderr
    assert "degraded" in table.stdout and "unreachable" in table.stdout


async def test_reads_filling_the_pool_never_send_the_money_path_degraded(
    pg_url: str, tmp_path: Path
) -> None:
    """Slow reads (history, the cache, a dashboard) as many as the pool has connections: a
    reservation still gets a connection in time, and a healthy database is not taken for an
    unreachable one (which would spill every write and cut the budget to an offline share)."""
    quick = Timeouts(connect_s=0.5, statement_s=5.0)
    opts = PostgresOptions(spill_path=tmp_path / "spill.db", timeouts=quick, pool_size=3)
    store = await PostgresStore(pg_url, opts).open()
    try:  # four reads of 0.8 s: the last would wait longer than a connection may take
        reads = [asyncio.create_task(store.fetch("SELECT pg_sleep(0.8)")) for _ in range(4)]
        await asyncio.sleep(0.2)  # the reads hold what they can
        got = await store.reserve(ask(0.01))
        assert isinstance(got, Hold) and got.id > 0, "granted by the database, not offline"
        assert not store.degraded
        await asyncio.gather(*reads)
        assert not store.degraded
    finally:
        await store.close()
