"""A request id names one call's record: a second call under an id already in the store (another
runtime, another process, after a restart) gets its own record under a new id, and its caller is
told that id. No call's record ever replaces another's. On SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from budget_helpers import WantsCloud
from budget_helpers import paid_and_free as config
from ledger_child import outputs
from test_postgres import options, rows
from test_store import make_record

from orchestra import (
    Agent,
    NoAllowedModelError,
    Orchestra,
    ProviderError,
    Request,
    Result,
    StreamBroken,
    Verdict,
)
from orchestra.core.tier import Tier
from orchestra.spend.ledger import Charge
from orchestra.store import RequestRecord, SqliteStore, Store
from orchestra.store.detail import Interner, encode
from orchestra.store.postgres import PostgresStore
from orchestra.store.postgres_writer import Payload, charge_json
from orchestra.store.record import request_row
from orchestra.store.transfer import copy_sqlite
from orchestra.testing import FunctionBackend
from orchestra.testing.function_backend import Call

CHILD = Path(__file__).with_name("ledger_child.py")


def answer(text: str) -> FunctionBackend:
    return FunctionBackend(lambda call: [text])


async def ask(location: str | Path, text: str, rid: str, *, stream: bool = False) -> Result:
    """One answer, under the chosen id `rid`, from a runtime of its own."""
    async with Orchestra(config(location), agents=[WantsCloud()], backend=answer(text)) as orc:
        if stream:
            async with orc.stream("What is the capital?", id=rid) as s:
                assert "".join([piece async for piece in s]) == text
            assert s.result is not None
            return s.result
        return await orc.complete("What is the capital?", id=rid)


async def recorded(location: str | Path) -> tuple[list[dict[str, object]], dict[str, object]]:
    async with Orchestra(config(location), agents=[], backend=answer("-")) as orc:
        return await orc.history(limit=50), await orc.spend_summary()


def assert_each_kept(results: list[Result], history: list[dict[str, object]]) -> None:
    """Every answer has its own record, under the id its caller was given, at its cost."""
    ids = [r.request_id for r in results]
    assert len(set(ids)) == len(ids), f"one id per call: {ids}"
    kept = {e["request_id"]: e for e in history}
    assert len(kept) == len(history), "no id twice in the history"
    for r in results:
        assert r.request_id in kept, f"{r.request_id} ({r.text}) is not in the history"
        assert kept[r.request_id]["status"] == "ok"
        assert kept[r.request_id]["cost_usd"] == pytest.approx(r.cost_usd)


async def test_two_runtimes_with_one_chosen_id_keep_both_records(
    store_location: str | Path,
) -> None:
    async with (
        Orchestra(config(store_location), agents=[WantsCloud()], backend=answer("Paris")) as a,
        Orchestra(config(store_location), agents=[WantsCloud()], backend=answer("Rome")) as b,
    ):
        first = await a.complete("What is the capital?", id="chosen-1")
        second = await b.complete("What is the capital?", id="chosen-1")
        async with b.stream("And the river?", id="chosen-1") as s:
            assert "".join([piece async for piece in s]) == "Rome"
        assert s.result is not None
        third = s.result
    assert first.request_id == "chosen-1", "the first call keeps the id it chose"
    history, summary = await recorded(store_location)
    assert_each_kept([first, second, third], history)
    assert {e["request_id"]: e["model"] for e in history}["chosen-1"] == first.model
    assert summary["answered_requests"] == 3
    assert summary["total_usd"] == pytest.approx(first.cost_usd + second.cost_usd + third.cost_usd)


async def test_a_restart_reusing_an_id_keeps_the_earlier_record(
    store_location: str | Path,
) -> None:
    before = await ask(store_location, "Paris", "abc")
    after = await ask(store_location, "Rome", "abc")
    streamed = await ask(store_location, "Bern", "abc", stream=True)
    assert before.request_id == "abc"
    history, summary = await recorded(store_location)
    assert_each_kept([before, after, streamed], history)
    assert summary["answered_requests"] == 3


async def test_feedback_names_the_call_its_id_was_returned_for(
    store_location: str | Path,
) -> None:
    before = await ask(store_location, "Paris", "fb-1")
    after = await ask(store_location, "Rome", "fb-1")
    async with Orchestra(config(store_location), agents=[], backend=answer("-")) as orc:
        await orc.feedback(after.request_id, good=False)
        await orc.feedback(before.request_id, good=True)
        history = await orc.history(limit=10)
    good = {e["request_id"]: e["feedback"]["good"] for e in history}  # type: ignore[index]
    assert good == {before.request_id: True, after.request_id: False}


class LocalOnly(Agent):
    """Vetoes every remote tier: a request forcing the paid (cloud) model has no model left."""

    name = "local-only"

    async def check(self, request: Request | None) -> Verdict:
        return self.verdict(allowed=frozenset({Tier.LOCAL}), reason="kept local")


def breaks_after_a_piece(call: Call) -> Iterator[str]:
    yield "Par"
    raise ProviderError("connection reset", kind="connection", model=call.model)


async def test_every_recorded_failure_names_the_id_its_record_got(
    store_location: str | Path,
) -> None:
    """Not only `AllCandidatesFailed`: a request no model was allowed for, and a stream broken
    after its first text, are recorded too, and their errors say under which id (a fresh one
    when the chosen id is another call's)."""
    await ask(store_location, "Paris", "taken")
    vetoed = Orchestra(config(store_location), agents=[LocalOnly()], backend=answer("-"))
    async with vetoed as orc:
        with pytest.raises(NoAllowedModelError) as refused:
            await orc.complete("What is the capital?", model="paid", id="taken")
    broken = Orchestra(
        config(store_location), agents=[WantsCloud()], backend=FunctionBackend(breaks_after_a_piece)
    )
    async with broken as orc:
        with pytest.raises(StreamBroken) as cut:
            async with orc.stream("What is the capital?", id="taken") as s:
                async for _ in s:
                    pass
    history, _ = await recorded(store_location)
    failed = [e["request_id"] for e in history if e["status"] == "error"]
    assert sorted(failed) == sorted([refused.value.request_id, cut.value.request_id])
    assert "taken" not in failed


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_processes_racing_on_one_chosen_id_keep_every_record(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("pg_url") if backend == "postgres" else ""
    children = [
        subprocess.Popen(
            [sys.executable, str(CHILD), "chosen", str(tmp_path), "same-id", "6", url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        for _ in range(3)
    ]
    returned: list[dict[str, object]] = [r for out in outputs(children) for r in out]
    assert len(returned) == 18
    location: str | Path = url or tmp_path / "orchestra.db"
    history, summary = asyncio.run(recorded(location))
    kept = {e["request_id"]: e for e in history}
    assert len({r["id"] for r in returned}) == 18, "one id per call"
    assert len(history) == 18 and set(kept) == {r["id"] for r in returned}
    assert sum(r["id"] == "same-id" for r in returned) == 1, "one call keeps the chosen id"
    for r in returned:
        assert kept[r["id"]]["cost_usd"] == pytest.approx(r["cost"])
    assert summary["answered_requests"] == 18
    assert summary["total_usd"] == pytest.approx(sum(float(r["cost"]) for r in returned))  # type: ignore[arg-type]


def call(rid: str, at: float, usd: float) -> RequestRecord:
    """A call's record under the id `rid`, charged `usd`."""
    rec = make_record(created_at=at, cost=usd)
    charge = Charge(model="c1", tier=Tier.CLOUD, prompt_tokens=10, completion_tokens=3,
                    cost_usd=usd, at=at)  # fmt: skip
    request = rec.request.model_copy(update={"id": rid})
    return replace(rec, request=request, charges=(charge,))


async def test_a_record_never_replaces_another_calls(store: Store) -> None:
    now = time.time()
    first = await store.record(call("same", now, 0.1))
    later = await asyncio.gather(  # one batch
        store.record(call("same", now + 1, 0.2)), store.record(call("same", now + 2, 0.3))
    )
    assert first == "same", "the first record keeps its id"
    assert len({first, *later}) == 3, "each other one gets a fresh id, and is told it"
    history = await store.history()
    costs = {e["request_id"]: e["cost_usd"] for e in history}
    assert costs == pytest.approx({first: 0.1, later[0]: 0.2, later[1]: 0.3})
    assert (await store.spend_summary())["total_usd"] == pytest.approx(0.6)


def spilled(rec: RequestRecord) -> Payload:
    """`rec` as the PostgreSQL writer keeps it in the spill file."""
    blob, shared = encode(rec.decision, rec.verdicts, rec.attempts, rec.ambient, Interner())
    rid = rec.request.id
    return {
        "request": rid,
        "rows": {"request": [list(request_row(rec, blob))], "shared": shared},
        "charges": [charge_json(rid, c, c.at or rec.created_at) for c in rec.ledger_charges()],
    }


async def test_a_drain_skips_its_own_committed_record_not_another_calls(
    pg_url: str, tmp_path: Path
) -> None:
    """A spilled record already committed (its connection broke before the commit was heard)
    is not written twice; another call's spilled record under the same id is written, under a
    fresh id, with its charges."""
    now = time.time()
    mine, theirs = call("dup", now, 0.1), call("dup", now + 1, 0.2)
    async with PostgresStore(pg_url, options(tmp_path)) as store:
        assert await store.record(mine) == "dup"
        await asyncio.to_thread(
            store._spill.append, [("write", spilled(mine)), ("write", spilled(theirs))],
            [True, True],
        )  # fmt: skip
        await store._w().run(store._w().drain)
        # drained again, as after a drain whose commit was not heard: nothing is written twice
        await asyncio.to_thread(store._spill.append, [("write", spilled(theirs))], [True])
        await store._w().run(store._w().drain)
        assert await asyncio.to_thread(store._spill.counts) == (0, 0, 0)
    kept = await rows(pg_url, "SELECT id, created_at FROM requests ORDER BY created_at")
    assert len(kept) == 2 and kept[0] == ("dup", now) and kept[1][0] != "dup"
    ledger = await rows(pg_url, "SELECT request_id, cost_usd FROM ledger ORDER BY cost_usd")
    assert ledger == [("dup", 0.1), (kept[1][0], 0.2)], "each charge once, under its record's id"


async def test_a_migrated_record_whose_id_is_taken_is_copied_beside_the_other(
    pg_url: str, tmp_path: Path
) -> None:
    """`orchestra store migrate` into a database where another call's record has the id."""
    now, home = time.time(), tmp_path / "home.db"
    async with PostgresStore(pg_url, options(tmp_path)) as pg:
        await pg.record(call("m", now, 0.2))
        await pg.record(call("both", now + 5, 0.5))  # this very call, in both already
    async with SqliteStore(home) as lite:
        await lite.record(call("m", now + 1, 0.1))
        await lite.record(call("both", now + 5, 0.5))
        await lite.add_feedback("m", False, "too short", now + 2)
    report = await copy_sqlite(home, pg_url)
    assert report["copied"]["requests"] == 1
    kept = await rows(pg_url, "SELECT id, cost_usd FROM requests ORDER BY created_at")
    assert len(kept) == 3 and kept[0] == ("m", 0.2) and kept[2] == ("both", 0.5)
    moved = kept[1][0]
    assert moved != "m" and kept[1][1] == 0.1
    feedback = await rows(pg_url, "SELECT request_id, note FROM feedback")
    assert feedback == [(moved, "too short")], "the judgement follows the call it was about"
    ledger = await rows(
        pg_url, "SELECT request_id, cost_usd FROM ledger WHERE cost_usd < 0.5 ORDER BY cost_usd"
    )
    assert ledger == [(moved, 0.1), ("m", 0.2)], "each charge under its own call's id"
