"""Every `Store` method behaves the same on SQLite and on PostgreSQL: each test here takes the
`store` fixture, so it runs once per backend (a real file, a real server). A second store on
the same location plays another process sharing it."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from test_store import make_record

from orchestra.core.model_spec import ModelSpec
from orchestra.core.tier import Tier
from orchestra.execution.breaker.storage import BreakerRecord
from orchestra.execution.cache import CachedAnswer
from orchestra.spend.ledger import Ask, Charge, Hold, Refusal
from orchestra.store import Store, open_store


@pytest.fixture
async def other(store: Store, store_location: str | Path, tmp_path: Path) -> AsyncIterator[Store]:
    """Another store on the same file or database (another process, another host)."""
    s = await open_store(store_location, home=tmp_path / "other-spill").open()
    yield s
    await s.close()


def ask(usd: float, daily: float = 1.0) -> Ask:
    return Ask(model="c1", tier=Tier.CLOUD, request_id="r", min_usd=usd, want_usd=usd,
               daily_usd=daily, monthly_usd=None, lease_s=60.0)  # fmt: skip


async def test_feedback_finds_requests_and_is_judged(store: Store) -> None:
    now = time.time()
    first, second = make_record(created_at=now - 1), make_record(created_at=now)
    await store.record(first)
    await store.record(second)
    rid = second.request.id
    assert [r.request_id for r in await store.find_request(rid, 6)] == [rid]
    assert [r.request_id for r in await store.find_request(rid[:8], 6)] == [rid]
    assert await store.find_request(rid[:3], 6) == [], "too short a prefix finds nothing"
    await store.add_feedback(rid, False, "wrong city", now)
    await store.add_feedback(rid, True, None, now + 1)
    judged = await store.judged_requests()
    assert [(j.request_id, j.good, j.tier) for j in judged] == [(rid, True, "cloud")]
    (entry,) = [h for h in await store.history(limit=5) if h["request_id"] == rid]
    assert entry["feedback"]["good"] is True, "history shows the newest judgement"


async def test_breakers_are_kept_and_shared(store: Store, other: Store) -> None:
    opened = BreakerRecord(state="open", failures=3, opened_at=100.0, updated_at=101.0)
    store.save_breaker("c1", opened)
    store.add_breaker_event("c1", 101.0, "closed", "open", "3 consecutive failures")
    await store.flush()
    assert await store.breaker_records() == {"c1": opened}
    assert await other.breaker_records() == {"c1": opened}, "seen by the other store"
    closed = replace(opened, state="closed", failures=0, opened_at=None, updated_at=200.0)
    other.save_breaker("c1", closed)
    await other.flush()
    assert (await store.breaker_records())["c1"] == closed, "the newest write wins"


async def test_cache_hits_expires_and_purges(store: Store, other: Store) -> None:
    answer = CachedAnswer(model="c1", tier=Tier.CLOUD, text="Paris", prompt_tokens=4,
                          completion_tokens=1, created_at=10.0)  # fmt: skip
    store.cache_answer("k1", answer, expires_at=100.0)
    store.cache_answer("k2", answer, expires_at=50.0)
    await store.flush()
    assert await store.cached_answer("k1", now=20.0) == (answer, 100.0)
    assert await other.cached_answer("k1", now=20.0) == (answer, 100.0), "a hit anywhere"
    assert await store.cached_answer("k2", now=60.0) is None, "expired"
    assert await store.cached_answer("missing", now=20.0) is None
    store.purge_cache(now=60.0)
    await store.flush()
    assert await store.cached_answer("k2", now=20.0) is None, "purged"
    assert await store.cached_answer("k1", now=20.0) is not None, "not yet expired: kept"


async def test_models_changed_while_running_are_versioned_across_stores(
    store: Store, other: Store
) -> None:
    spec = ModelSpec(name="m1", tier=Tier.EDGE, litellm_model="openai/m1")
    added = await store.save_model(spec, at=1.0)
    moved = await other.save_model(spec.model_copy(update={"tier": Tier.CLOUD}), at=2.0)
    gone = await store.drop_model("m2", at=3.0)
    assert added.version < moved.version < gone.version, "one order for every process"
    seen = await other.stored_models()
    assert [(m.name, m.version) for m in seen] == [("m1", moved.version), ("m2", gone.version)]
    assert seen[0].spec is not None and seen[0].spec.tier is Tier.CLOUD
    assert seen[1].spec is None, "removed"
    assert [m.name for m in await store.stored_models(after_version=moved.version)] == ["m2"]


async def test_replay_reads_newest_first_in_batches(store: Store) -> None:
    now = time.time()
    records = [make_record(created_at=now - 100 + i) for i in range(7)]
    for rec in records:
        await store.record(rec)
    assert await store.count_requests() == 7
    assert await store.count_requests(since=now - 100 + 4) == 3
    batches = [b async for b in store.replay_batches(since=None, limit=5, batch=2)]
    assert [len(b.requests) for b in batches] == [2, 2, 1]
    ids = [row[1] for b in batches for row in b.requests]
    assert ids == [r.request.id for r in reversed(records)][:5]
    for b in batches:
        assert len(b.details) == len(b.requests)
        assert all(d["v"] for d in b.details), "each with its verdicts"


async def test_replay_parts_split_the_requests_between_them(store: Store) -> None:
    now = time.time()
    records = [make_record(created_at=now - 100 + i) for i in range(11)]
    for rec in records:
        await store.record(rec)
    everyone = [row[1] async for b in store.replay_batches(None, None, 4) for row in b.requests]
    parts = [
        [row[1] async for b in store.replay_batches(None, None, 2, (k, 3)) for row in b.requests]
        for k in range(3)
    ]
    assert sorted(everyone) == sorted(i for p in parts for i in p), "each request in one part"
    assert all(parts), "each part has some of 11 requests"
    for part in parts:  # newest first within a part, too
        assert part == [i for i in everyone if i in part]
    with pytest.raises(ValueError, match="part"):
        [b async for b in store.replay_batches(None, None, 2, (3, 3))]


async def test_a_replay_split_between_processes_reports_what_one_process_does(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    from orchestra import Catalog
    from orchestra.lab.replay import replay
    from orchestra.policies.registry import PolicyConfig, resolve_policy

    now = time.time()
    for i in range(9):
        await store.record(make_record(created_at=now - 100 + i))
    catalog = Catalog([
        ModelSpec(name="e1", tier=Tier.EDGE, litellm_model="openai/e1"),
        ModelSpec(name="c1", tier=Tier.CLOUD, litellm_model="openai/c1", input_cost_per_mtok=1.0,
                  output_cost_per_mtok=2.0),
    ])  # fmt: skip
    policies = [resolve_policy(PolicyConfig(name="default"))]
    assert store.opener() is not None, "another process can open it"
    one = await replay(store, catalog, policies, workers=1)
    with caplog.at_level(logging.WARNING, logger="orchestra.lab.replay_parallel"):
        two = await replay(store, catalog, policies, workers=2)
    assert "failed" not in caplog.text, "the worker replayed its part itself"
    assert [r.to_dict() for r in two] == [r.to_dict() for r in one]
    assert one[0].requests == 9 and one[0].decision_agreement == 9
    assert one[0].actual_cost_usd == pytest.approx(0.09)


async def test_reservations_hold_settle_and_release(store: Store, other: Store) -> None:
    holds = [await store.reserve(ask(0.3)) for _ in range(3)]
    assert all(isinstance(h, Hold) for h in holds)
    refused = await other.reserve(ask(0.3))
    assert isinstance(refused, Refusal) and refused.limit == "daily", "$0.90 of $1 held"
    assert refused.left_usd == pytest.approx(0.1)
    first, second = holds[0], holds[1]
    assert isinstance(first, Hold) and isinstance(second, Hold)
    charge = Charge(model="c1", tier=Tier.CLOUD, prompt_tokens=10, completion_tokens=3,
                    cost_usd=0.1, hold_id=first.id)  # fmt: skip
    await store.record(replace(make_record(created_at=time.time(), cost=0.1), charges=(charge,)))
    store.release(second)
    await store.flush()
    totals = await other.spend_totals()
    assert totals.today_usd == pytest.approx(0.1)
    assert totals.reserved_usd == pytest.approx(0.3), "one hold left; settled and released go"
    assert isinstance(await other.reserve(ask(0.55)), Hold), "what settling gave back"
    summary = await store.spend_summary()
    assert summary["today_usd"] == pytest.approx(0.1)
    assert summary["month_by_model"][0]["model"] == "c1"


async def test_samples_newest_first_by_agent(store: Store) -> None:
    rec = make_record(created_at=time.time())
    for verdict in rec.verdicts:
        store.record_sample(verdict)
    await store.flush()
    assert {v.agent for v in await store.samples()} == {"connectivity", "complexity"}
    (only,) = await store.samples(agent="connectivity")
    assert only == rec.verdicts[0]
