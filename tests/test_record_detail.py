"""A request's stored detail: a long candidate list is kept once however many requests share it,
and details written in the first format still read back."""

from __future__ import annotations

import sqlite3
import time
import zlib
from pathlib import Path

import orjson

from orchestra import Candidate, Decision, Request, Tier, Verdict
from orchestra.store import RequestRecord, SqliteStore
from orchestra.store.detail import _ZDICT, decode


def record(reason: str, candidates: tuple[Candidate, ...]) -> RequestRecord:
    decision = Decision(policy="default", candidates=candidates, reason=reason, target=Tier.CLOUD)
    verdict = Verdict(agent="complexity", target=Tier.CLOUD, reason=reason)
    return RequestRecord(
        request=Request.of("a question"), verdicts=(verdict,), decision=decision, result=None,
        attempts=(), created_at=time.time(), latency_ms=1.0, error_kind="timeout", error="x",
    )  # fmt: skip


async def test_a_long_candidate_list_is_stored_once(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    many = tuple(Candidate(model=f"m{i}", tier=Tier.CLOUD, reason=f"#{i + 1}") for i in range(200))
    async with SqliteStore(db) as store:
        for i in range(30):  # each decision differs (its reason), the list does not
            await store.record(record(f"vote {i}", many))
        history = await store.history(limit=30)
    assert len(history) == 30
    assert all(len(h["decision"]["candidates"]) == 200 for h in history)
    assert history[0]["decision"]["candidates"][199] == {"model": "m199", "tier": "cloud",
                                                         "reason": "#200"}  # fmt: skip
    conn = sqlite3.connect(db)
    try:
        lists = conn.execute("SELECT COUNT(*) FROM shared WHERE json LIKE '[{\"model\"%'")
        assert lists.fetchone() == (1,)
        (largest,) = conn.execute("SELECT MAX(LENGTH(detail)) FROM requests").fetchone()
    finally:
        conn.close()
    assert largest < 400, "a reference, not 200 candidates, in every row"


def test_a_first_format_detail_still_reads() -> None:
    body = {"f": 1, "d": {"policy": "default", "candidates": [{"model": "m", "tier": "local"}]},
            "v": [{"agent": "cost", "at": 1.0}], "a": []}  # fmt: skip
    packer = zlib.compressobj(6, zlib.DEFLATED, -15, zdict=_ZDICT)
    blob = packer.compress(orjson.dumps(body)) + packer.flush()
    assert decode(blob) == body
