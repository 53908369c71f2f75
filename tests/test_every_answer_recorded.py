"""A returned answer is a recorded answer: each one, whether from `complete`, `stream` or the
sync wrapper, is in the history under its own id at the cost its caller saw, and the ledger
holds exactly that. On SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from budget_helpers import WantsCloud
from budget_helpers import paid_and_free as config

from orchestra import Orchestra, Request, SyncOrchestra
from orchestra.testing import FunctionBackend


def answer() -> FunctionBackend:
    return FunctionBackend(lambda call: ["Paris ", "is the ", "capital."])


async def test_a_request_answered_again_is_recorded_again(store_location: str | Path) -> None:
    """A caller's retry loop hands the same `Request` again: each answer keeps its record."""
    async with Orchestra(config(store_location), agents=[WantsCloud()], backend=answer()) as orc:
        request = Request.of("What is the capital of France?")
        results = [await orc.complete(request), await orc.complete(request, max_tokens=50)]
        async with orc.stream(request) as s:
            assert "".join([piece async for piece in s]) == "Paris is the capital."
        assert s.result is not None
        results += [s.result, await orc.complete("Hello?", id=results[0].request_id)]
        history = await orc.history(limit=10)
        summary = await orc.spend_summary()
    assert results[0].request_id == request.id, "a fresh request keeps its id"
    assert len({r.request_id for r in results}) == 4, "one id per call"
    recorded = {e["request_id"]: e for e in history}
    for r in results:
        assert recorded[r.request_id]["status"] == "ok"
        assert recorded[r.request_id]["cost_usd"] == pytest.approx(r.cost_usd)
    assert summary["answered_requests"] == 4
    assert summary["total_usd"] == pytest.approx(sum(r.cost_usd for r in results))


def test_the_sync_wrapper_records_every_answer(store_location: str | Path) -> None:
    with SyncOrchestra(config(store_location), agents=[WantsCloud()], backend=answer()) as orc:
        request = Request.of("What is the capital of France?")
        results = [orc.complete(request), orc.complete(request)]
        assert "".join(orc.stream(request)) == "Paris is the capital."
        history = orc.history(limit=10)
        summary = orc.spend_summary()
    assert len(history) == 3 and {e["status"] for e in history} == {"ok"}
    recorded = {e["request_id"]: e["cost_usd"] for e in history}
    for r in results:
        assert recorded[r.request_id] == pytest.approx(r.cost_usd)
    assert summary["answered_requests"] == 3
    assert summary["total_usd"] == pytest.approx(sum(recorded.values()))
