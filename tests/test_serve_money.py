"""The money and the records, end to end: `orchestra serve --workers 2` called with the OpenAI
SDK as apps call it, against stub providers that count what they would bill (`served`).

For every scenario: what the provider billed stays within the budget; the ledger never counts
less than the provider billed (and, with honest usage, the same); every answer a client received
has its record; nothing stays reserved.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import pytest
from conftest import model_toml
from openai import APIError, APIStatusError, AsyncOpenAI, OpenAI, RateLimitError
from server_helpers import ServerProcess
from test_server_load import wait_for_workers

from orchestra.testing import Behaviour, Served, StubProvider

IN, OUT = 0.15, 0.60  # model_toml's prices, USD per million tokens
PROMPT = "Tell me a long story about the sea, question {i}"


def story(words: int) -> Behaviour:
    """An answer of `words` distinct words (LiteLLM breaks a stream that repeats a chunk 100
    times, so not the stub's "word word ...")."""
    return Behaviour(reply="".join(f"w{j} " for j in range(words)))


@dataclass
class Seen:
    """What the clients saw: request ids of answers received in full, ids of streams left or
    broken after some text, and the errors (status, code) of refused requests."""

    answered: set[str] = field(default_factory=set)
    left: set[str] = field(default_factory=set)
    errors: list[tuple[int, str | None]] = field(default_factory=list)


@dataclass(frozen=True)
class Books:
    """The store after the run: ok records, ledger rows and their sum, live reservations."""

    records: dict[str, str]  # request id -> status
    ledger_rows: int
    ledger_usd: float
    held: int
    held_usd: float


BOOKS = (
    "SELECT id, status FROM requests",
    "SELECT COUNT(*), COALESCE(SUM(cost_usd), 0) FROM ledger",
    "SELECT COUNT(*), COALESCE(SUM(usd), 0) FROM reservations",
)


def books(pg_url: str | None = None) -> Books:
    """The books as they are in the store (the SQLite file, or PostgreSQL at `pg_url`)."""
    if pg_url is not None:
        return asyncio.run(_pg_books(pg_url))
    with sqlite3.connect(Path(os.environ["ORCHESTRA_HOME"]) / "orchestra.db") as db:
        records = dict(db.execute(BOOKS[0]).fetchall())
        (rows, usd), (held, held_usd) = (db.execute(q).fetchone() for q in BOOKS[1:])
    db.close()
    return Books(records, rows, usd, held, held_usd)


async def _pg_books(url: str) -> Books:
    db = await asyncpg.connect(url)
    try:
        records = {r[0]: r[1] for r in await db.fetch(BOOKS[0])}
        (rows, usd), (held, held_usd) = [tuple(await db.fetchrow(q)) for q in BOOKS[1:]]
    finally:
        await db.close()
    return Books(records, rows, float(usd), held, float(held_usd))


@contextmanager
def serving(
    write_config: Callable[..., Path],
    tmp_path: Path,
    stub: StubProvider,
    budget: str,
    pg_url: str | None = None,
) -> Iterator[ServerProcess]:
    store = f'[store]\nurl = "{pg_url}"\n' if pg_url else ""
    config = write_config(
        model_toml("stub-cloud", stub.url, timeout_s=30.0), extra=f"[budget]\n{budget}\n{store}"
    )
    log = tmp_path / "serve.log"
    args = ("--config", str(config), "serve", "--workers", "2")
    with ServerProcess(*args, log=log) as server:
        wait_for_workers(log, 2)
        yield server
    assert "Traceback" not in log.read_text()


def client(server: ServerProcess, **options: Any) -> AsyncOpenAI:
    options.setdefault("max_retries", 0)
    return AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", **options)


async def ask(
    api: AsyncOpenAI, i: int, seen: Seen, *, stream: bool, max_tokens: int | None, leave: int = 0
) -> None:
    """One request; a stream left after `leave` chunks when `leave` is set."""
    extra: dict[str, Any] = {} if max_tokens is None else {"max_tokens": max_tokens}
    messages: Any = [{"role": "user", "content": PROMPT.format(i=i)}]
    try:
        if not stream:
            answer = await api.chat.completions.create(model="auto", messages=messages, **extra)
            seen.answered.add((answer.model_extra or {})["orchestra"]["request_id"])
            return
        chunks = await api.chat.completions.create(
            model="auto", messages=messages, stream=True,
            stream_options={"include_usage": True}, **extra,
        )  # fmt: skip
        rid, n = "", 0
        async with chunks:
            async for chunk in chunks:
                rid = chunk.id.removeprefix("chatcmpl-")
                n += 1
                if leave and n >= leave:
                    seen.left.add(rid)
                    return
        seen.answered.add(rid)
    except APIStatusError as exc:
        code = exc.body.get("code") if isinstance(exc.body, dict) else None
        seen.errors.append((exc.status_code, code))


async def crowd(
    server: ServerProcess, calls: list[dict[str, Any]], seen: Seen, at_once: int
) -> None:
    """`ask` with each of `calls`' keyword arguments, `at_once` clients at a time."""
    gate = asyncio.Semaphore(at_once)

    async def one(i: int, kwargs: dict[str, Any]) -> None:
        async with gate:
            await ask(api, i, seen, **kwargs)

    async with client(server) as api:
        await asyncio.gather(*(one(i, kwargs) for i, kwargs in enumerate(calls)))


def until(condition: Callable[[], bool], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.05)


def quiet(stub: StubProvider, within_s: float = 10.0) -> Served:
    """What `stub` served, once it has stopped serving for a while."""
    deadline = time.monotonic() + within_s
    served = stub.served
    while time.monotonic() < deadline:
        time.sleep(0.3)
        if stub.served == served:
            return served
        served = stub.served
    raise AssertionError(f"the provider is still generating: {served}")


def settle_books(pg_url: str | None = None, within_s: float = 10.0) -> Books:
    """The books once nothing is reserved any more (streams left are settled in the background)."""
    deadline = time.monotonic() + within_s
    while (b := books(pg_url)).held and time.monotonic() < deadline:
        time.sleep(0.1)
    return b


def assert_true_books(
    stub: StubProvider, seen: Seen, budget_usd: float, *, honest: bool, pg_url: str | None = None
) -> Books:
    b = settle_books(pg_url)
    billed = stub.served.cost_usd(IN, OUT)
    assert billed <= budget_usd + 1e-12, f"the provider billed {billed} over {budget_usd}"
    assert b.ledger_usd >= billed - 1e-12, f"ledger {b.ledger_usd} < billed {billed}"
    if honest:  # a whole answer cut at its cap is settled before its usage arrives: estimated
        assert b.ledger_usd == pytest.approx(billed, rel=1e-2)
    assert b.held == 0, "every reservation was settled"
    assert {rid for rid in seen.answered if b.records.get(rid) != "ok"} == set()
    assert sum(status == "ok" for status in b.records.values()) == len(seen.answered)
    return b


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_many_clients_two_workers_budget_holds_and_books_are_true(
    backend: str, write_config: Callable[..., Path], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    pg_url = request.getfixturevalue("pg_url") if backend == "postgres" else None
    rng = random.Random(7)
    budget = 0.03  # some 40 answers of 1250 words ($0.00075); some 12 reservations at once
    with StubProvider(Behaviour(reply_words=1000)) as stub:
        stub.enqueue(*(story(rng.randrange(1, 3000)) for _ in range(400)))
        with serving(write_config, tmp_path, stub, f"daily_usd = {budget}", pg_url) as server:
            seen = Seen()
            calls = [
                {"stream": rng.random() < 0.5,
                 "max_tokens": rng.choice([None, rng.randrange(1, 3000)])}
                for _ in range(80)
            ]  # fmt: skip
            asyncio.run(crowd(server, calls, seen, at_once=12))
    assert_true_books(stub, seen, budget, honest=True, pg_url=pg_url)
    assert seen.answered and seen.errors, (len(seen.answered), seen.errors)
    assert set(seen.errors) == {(429, "insufficient_quota")}, seen.errors
    # Much of the budget is spent, not left idle behind worst-case holds (some is: requests are
    # refused while the holds of the calls in flight are still worst cases, and how many are in
    # flight at once is timing: on PostgreSQL, 0.54-1.0 of the budget measured over a dozen
    # runs, the same before and after the SDK took these calls).
    assert len(seen.answered) >= 25 and stub.served.cost_usd(IN, OUT) > budget * 0.4


@pytest.mark.slow
def test_streams_left_by_their_clients_are_cut_billed_and_settled(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """Clients leave paced streams after a few chunks: the server stops reading the provider
    (which stops generating), bills what it produced, and holds nothing."""
    rng = random.Random(3)
    budget = 0.05
    stub = StubProvider(Behaviour(reply=story(400).reply, chunk_delay_s=0.01))
    with stub, serving(write_config, tmp_path, stub, f"daily_usd = {budget}") as server:
        seen = Seen()
        calls = [{"stream": True, "max_tokens": None, "leave": rng.randrange(1, 40)}] * 30
        asyncio.run(crowd(server, calls, seen, at_once=15))
        served = quiet(stub)  # a paced provider notices a closed connection at its next write
    assert served.completion_tokens < 30 * 400 / 2, "the streams were cut, not read to the end"
    b = assert_true_books(stub, seen, budget, honest=False)
    assert len(seen.left) >= 15
    assert {rid for rid in seen.left if rid not in b.records} == set()


LIARS = {
    "honest": {},
    "no usage": {"usage": False},
    "half": {"usage_scale": 0.5},
    "none": {"usage_scale": 0.0},
    "triple": {"usage_scale": 3.0},
    "zeros": {"usage_report": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}},
    "past its cap": {"ignore_cap": True, "chunk_delay_s": 0.002},
}


@pytest.mark.slow
def test_providers_that_misreport_usage_are_never_under_counted(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    rng = random.Random(11)
    budget = 0.03
    with StubProvider(story(100)) as stub:
        kinds = [rng.choice(list(LIARS)) for _ in range(300)]
        stub.enqueue(*(
            Behaviour(reply=story(rng.randrange(1, 3000)).reply, **LIARS[k]) for k in kinds
        ))  # fmt: skip
        with serving(write_config, tmp_path, stub, f"daily_usd = {budget}") as server:
            seen = Seen()
            calls = [
                {"stream": rng.random() < 0.5,
                 "max_tokens": rng.choice([None, rng.randrange(1, 1000)])}
                for _ in range(80)
            ]  # fmt: skip
            asyncio.run(crowd(server, calls, seen, at_once=12))
    assert_true_books(stub, seen, budget, honest=False)
    assert len(seen.answered) >= 12, (len(seen.answered), seen.errors)


def busy_worker(log: Path, stub: StubProvider) -> int:
    """The pid of the worker with the fewest calls open to `stub`, but some."""
    pids = [int(pid) for pid in re.findall(r"Started server process \[(\d+)\]", log.read_text())]
    calls = {
        pid: sum(
            bool(c.raddr) and c.raddr.port == stub.port
            for c in psutil.Process(pid).net_connections()
        )
        for pid in pids
    }
    return min((pid for pid in pids if calls[pid]), key=lambda pid: calls[pid])


@pytest.mark.slow
def test_a_worker_killed_mid_answer_keeps_the_budget_and_the_answers_returned(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """`kill -9` of a worker while streams are open: its calls stay reserved (the budget counts
    them) until their lease runs out, then are charged in full; every answer a client received
    is recorded; the other worker and the restarted one keep serving."""
    budget = 0.05
    log = tmp_path / "serve.log"
    stub = StubProvider(Behaviour(reply=story(60).reply, chunk_delay_s=0.05))
    with stub, serving(write_config, tmp_path, stub, f"daily_usd = {budget}") as server:
        seen, broken = Seen(), list[Exception]()

        async def one(api: AsyncOpenAI, i: int) -> None:
            try:
                await ask(api, i, seen, stream=True, max_tokens=None)
            except (APIError, httpx.TransportError) as exc:  # it died with its worker
                broken.append(exc)

        async def run() -> None:
            async with client(server) as api:
                tasks = [asyncio.create_task(one(api, i)) for i in range(8)]
                await asyncio.to_thread(until, lambda: stub.served.completion_tokens >= 40)
                os.kill(busy_worker(log, stub), signal.SIGKILL)
                await asyncio.gather(*tasks)

        asyncio.run(run())
        wait_for_workers(log, 3)  # uvicorn started another
        served = quiet(stub)
        b = books()
        assert broken, "the killed worker was answering"
        assert b.held == len(broken), "the killed calls stay reserved"
        held_usd = b.held_usd
        with sqlite3.connect(Path(os.environ["ORCHESTRA_HOME"]) / "orchestra.db") as db:
            # Their leases run out (the request's deadline plus a minute, made now).
            db.execute("UPDATE reservations SET expires_at = 0")
        db.close()
        assert b.ledger_usd + held_usd >= served.cost_usd(IN, OUT)
        after_kill = [{"stream": i % 2 == 0, "max_tokens": 5} for i in range(4)]
        asyncio.run(crowd(server, after_kill, seen, at_once=2))
        assert len(seen.answered) >= 4
    after = assert_true_books(stub, seen, budget, honest=False)
    assert after.ledger_usd >= b.ledger_usd + held_usd - 1e-12, "charged in full once expired"


@pytest.mark.slow
def test_a_spent_budget_is_a_429_insufficient_quota_for_every_request(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """Once the budget is spent, a request is refused as OpenAI refuses a spent quota (429
    `insufficient_quota`, `RateLimitError` in the SDK), whether the budget's guard or the cost
    agent (which sees the spend first) refuses it: never a 503 that reads as an outage."""
    stub = StubProvider(story(1000))
    with stub, serving(write_config, tmp_path, stub, "daily_usd = 0.004") as server:
        seen = Seen()
        asyncio.run(crowd(server, [{"stream": False, "max_tokens": None}] * 8, seen, 1))
        asyncio.run(crowd(server, [{"stream": True, "max_tokens": None}] * 2, seen, 1))
        billed = stub.served
        with OpenAI(base_url=f"{server.url}/v1", api_key="unused") as sdk:  # its retries
            for stream in (False, True):
                with pytest.raises(RateLimitError) as refused:
                    sdk.chat.completions.create(
                            model="auto", messages=[{"role": "user", "content": "hi"}],
                            stream=stream,
                        )  # fmt: skip
                assert refused.value.code == "insufficient_quota"
                assert refused.value.type == "insufficient_quota"  # as OpenAI answers it
    assert stub.served == billed, "no call reached the provider"
    assert_true_books(stub, seen, 0.004, honest=False)
    assert set(seen.errors) == {(429, "insufficient_quota")}, seen.errors
