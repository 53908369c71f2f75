"""The stored detail's third format: what history and replay read back is what the second format
gave for the same records; second-format details still read; the forms built by hand equal
pydantic's; the complexity verdict's list form holds it exactly or is not used."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from orchestra import Candidate, Decision, Request, StoreError, Tier, Verdict
from orchestra.agents.complexity.agent import ComplexityAgent
from orchestra.agents.complexity.scorer import SIGNAL_NAMES, signals
from orchestra.core.decision import Exclusion
from orchestra.core.result import Attempt
from orchestra.lab.replay_rows import _Builder
from orchestra.store import RequestRecord, SqliteStore, forms
from orchestra.store import complexity_form as cf
from orchestra.store.detail import (
    _MARK_2,
    _ZDICT_2,
    Interner,
    decode,
    decode_lean,
    encode,
    lean_refs,
    refs_of,
)

PROMPTS = (
    "What is 2 + 2?",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in "
    "May. How many clips did Natalia sell altogether in April and May?",
    "Explain the difference between a process and a thread, with an example in Python:\n"
    "```python\nimport threading\n```",
    "Compute the integral of $x^2 \\sin(x)$ from 0 to \\pi, then give the result to 3 decimals.",
    "hi",
)
# A detail as format 2 wrote it (resource's verdict and the candidate list shared).
FORMAT_2_BLOB = bytes.fromhex(
    "ff85943d0ec3300846efd2b98a0cf887f436d886ad6b97c877afdd3a892a45ea84183e4048ef6db7ae37ec100fa0"
    "fe50bb4d19c61c3ca5c4bda026ccaac6586a35216017f335c6d3668707677fd23cfa875b88a0f501af0fd5df85e0"
    "330646102b19fabe5851d45057c746bafaa1cf3e12dce2da7d0f092689c0404e4a65530c6ad12b10ae05c06c0fc1"
    "125ae7577eacf484f36ff3d06ba3e048b737"
)
FORMAT_2_DATA = {
    "f": 2,
    "d": {"policy": "default", "candidates": {"ref": "6b543778b542e72beef82cddfa31806b"},
          "reason": "vote for edge", "target": "edge", "votes": {"edge": 0.331}},
    "v": [{"ref": "14b25821afcb12be6d2aef2e908f3e94", "at": 10.0},
          {"ref": "a27a618130acd8fe25ef64e1329c11ff", "at": 11.5}],
    "a": [{"model": "m1", "tier": "edge", "ok": True, "latency_ms": 2.5}],
}  # fmt: skip
# The shared values `FORMAT_2_BLOB` refers to.
SHARED_2 = [
    ("14b25821afcb12be6d2aef2e908f3e94", '{"agent":"resource","confidence":0.2,"metrics":'
     '{"cores":2},"reason":"headroom","target":"local"}'),
    ("a27a618130acd8fe25ef64e1329c11ff", '{"agent":"complexity","confidence":0.331,'
     '"metrics":{"score":0.5205,"signals":{"latex":0.693,"log_chars":5.338}},"reason":'
     '"complexity score 0.52","state":"moderate","target":"edge"}'),
    ("6b543778b542e72beef82cddfa31806b", '[{"model":"m1","tier":"edge","reason":"#1"}]'),
]  # fmt: skip
_DEFAULTS: dict[str, Any] = {
    "target": None, "allowed": ["local", "edge", "cloud"], "denied_models": [],
    "confidence": 0.5, "state": "ok", "reason": "", "metrics": {}, "stale": False,
    "neutral": False,
}  # fmt: skip


def complexity_verdict(prompt: str, agent: ComplexityAgent | None = None) -> Verdict:
    agent = agent or ComplexityAgent(model="shipped")
    sig = signals(prompt)
    return agent.judge(agent.model.score_signals(sig), sig)


def the_verdicts(prompt: str, at: float) -> list[Verdict]:
    return [
        Verdict(agent="resource", target=Tier.LOCAL, confidence=0.1112, state="ok",
                reason="headroom (CPU 49%)", metrics={"cores": 2, "gpu": "none"}, at=at - 3),
        Verdict(agent="connectivity", allowed=frozenset({Tier.LOCAL, Tier.EDGE}),
                state="offline", reason="no route", at=at - 1),
        Verdict(agent="cost", confidence=0.0, state="no_budget", reason="no budget set",
                metrics={"today_usd": 0.000111, "left_usd": None, "seen": {2, 1}},
                denied_models=frozenset({"z", "a"}), at=at),
        complexity_verdict(prompt).model_copy(update={"at": at + 1e-5}),
        Verdict(agent="privacy", state="clean", stale=True, at=at + 2e-5),
        Verdict.neutral_for("slow", "timeout", "over its budget"),
    ]  # fmt: skip


def the_decision(i: int) -> Decision:
    many = tuple(Candidate(model=f"m{k}", tier=Tier.CLOUD, reason=f"#{k}") for k in range(9))
    few = (Candidate(model="a", tier=Tier.LOCAL), Candidate(model="b", tier=Tier.EDGE, reason="x"))
    return Decision(
        policy="default", candidates=many if i % 2 else few, reason=f"vote {i}",
        target=Tier.EDGE if i % 3 else None, votes={Tier.LOCAL: 0.25, Tier.EDGE: 0.5},
        excluded=(Exclusion(tier=Tier.CLOUD, by="net", reason="offline"),) if i % 2 else (),
    )  # fmt: skip


def the_attempts() -> tuple[Attempt, ...]:
    return (
        Attempt(model="b", tier=Tier.EDGE, ok=False, latency_ms=12.25, error_kind="server",
                error="HTTP 500", status_code=500, retry_in_s=0.5),
        Attempt(model="m1", tier=Tier.CLOUD, ok=True, latency_ms=2.271548000862822, cached=True),
        Attempt(model="m2", tier=Tier.CLOUD, ok=False, latency_ms=0.0, skipped=True),
    )  # fmt: skip


def records(n: int) -> list[RequestRecord]:
    now = time.time()
    out = []
    for i in range(n):
        prompt = PROMPTS[i % len(PROMPTS)]
        out.append(
            RequestRecord(
                request=Request.of(prompt), verdicts=the_verdicts(prompt, now + i),
                decision=the_decision(i) if i % 4 else None, result=None,
                attempts=the_attempts()[: i % 4], created_at=now + i, latency_ms=3.0,
                error_kind="timeout", error="x", ambient=frozenset({"resource", "connectivity"}),
            )
        )  # fmt: skip
    return out


def format_2(rec: RequestRecord) -> bytes:
    """The detail as format 2 wrote it (everything inline), with pydantic's own forms."""

    def compact(v: Verdict) -> dict[str, Any]:
        full = v.model_dump(mode="json", fallback=str)
        kept = {k: x for k, x in full.items() if k != "at" and _DEFAULTS.get(k, ...) != x}
        return {**orjson.loads(orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)), "at": v.at}

    d = rec.decision
    body = {
        "f": 2,
        "d": orjson.loads(d.model_dump_json(exclude_defaults=True)) if d is not None else None,
        "v": [compact(v) for v in rec.verdicts],
        "a": [a.model_dump(mode="json", exclude_defaults=True) for a in rec.attempts],
    }
    packer = zlib.compressobj(6, zlib.DEFLATED, -15, zdict=_ZDICT_2)
    return _MARK_2 + packer.compress(orjson.dumps(body, default=str)) + packer.flush()


# -- what reads back ---------------------------------------------------------------------------


async def test_history_and_replay_read_the_same_as_from_format_2(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    recs = records(12)
    async with SqliteStore(db) as store:
        for rec in recs:
            await store.record(rec)
        new = await store.history(limit=100)
        new_replay = await replayed(store)
    conn = sqlite3.connect(db)
    try:
        (third,) = conn.execute("SELECT COUNT(*) FROM requests WHERE substr(detail, 1, 1) = ?",
                                (b"\xfe",)).fetchone()  # fmt: skip
        assert third == len(recs), "written in format 3"
        conn.executemany(
            "UPDATE requests SET detail = ? WHERE id = ?",
            [(format_2(rec), rec.request.id) for rec in recs],
        )
        conn.commit()
    finally:
        conn.close()
    async with SqliteStore(db) as store:
        old = await store.history(limit=100)
        old_replay = await replayed(store)
    assert orjson.dumps(new) == orjson.dumps(old), "the same JSON, keys in the same order"
    assert new_replay == old_replay
    # Each verdict as it was, its own time too (what a policy of the caller's own may read).
    as_json = [[v.model_dump(mode="json") for v in vs] for vs, _ in new_replay]
    assert as_json == [[v.model_dump(mode="json") for v in rec.verdicts] for rec in reversed(recs)]
    assert any(v["agent"] == "complexity" and v["metrics"]["signals"] for v in new[0]["verdicts"])
    assert len(new[0]["verdicts"]) == 6 and new[0]["attempts"] == old[0]["attempts"]


async def replayed(store: SqliteStore) -> list[tuple[list[Verdict], dict[str, Any] | None]]:
    """Each stored request's verdicts and live decision as replay builds them."""
    builder, out = _Builder(), []
    async for batch in store.replay_batches(None, None, 5):
        for detail in batch.details:
            out.append(
                (builder.verdicts(detail, batch.shared), builder.decision(detail, batch.shared))
            )
    return out


def test_a_second_format_detail_still_reads() -> None:
    assert decode(FORMAT_2_BLOB) == FORMAT_2_DATA


def test_a_third_format_detail_reads_in_the_second_format_shape() -> None:
    rec = records(2)[1]
    interner = Interner()
    encode(rec.decision, rec.verdicts, rec.attempts, rec.ambient, interner)  # seen once
    blob, new = encode(rec.decision, rec.verdicts, rec.attempts, rec.ambient, interner)
    data = decode(blob)
    assert blob[:1] == b"\xfe" and data["f"] == 3
    refs = [v["ref"] for v in data["v"] if "ref" in v]
    assert len(refs) == 6, "ambient, and the others seen twice, are referred to"
    assert isinstance(data["d"]["candidates"], dict) and "ref" in data["d"]["candidates"]
    assert {k for k, _ in new} == set(refs[2:]), "ambient ones and the long list: stored before"
    assert len(set(refs)) == 6 and all(len(r) <= 20 for r in refs)
    assert all(r[:16] == refs[0][:16] for r in refs), "one interner's prefix"
    assert Interner().place(b"x", always=True)[0] != Interner().place(b"x", always=True)[0]


# -- the forms ---------------------------------------------------------------------------------


def test_the_forms_know_every_field() -> None:
    assert frozenset(Verdict.model_fields) == forms.VERDICT_FIELDS
    assert frozenset(Decision.model_fields) == forms.DECISION_FIELDS
    assert frozenset(Candidate.model_fields) == forms.CANDIDATE_FIELDS
    assert frozenset(Attempt.model_fields) == forms.ATTEMPT_FIELDS


def test_the_forms_equal_pydantics() -> None:
    for v in the_verdicts(PROMPTS[1], 100.0):
        full = v.model_dump(mode="json", fallback=str)
        expected = {k: x for k, x in full.items() if k != "at" and _DEFAULTS.get(k, ...) != x}
        _, text = forms.verdict_json(v)
        assert orjson.loads(text) == expected, v.agent
    for i in range(6):
        d = the_decision(i)
        form = {**forms.decision_form(d), "candidates": forms.candidates_form(d.candidates)}
        assert Decision.model_validate(form) == d
        assert form == orjson.loads(d.model_dump_json(exclude_defaults=True))
    for a in the_attempts():
        assert forms.attempt_form(a) == a.model_dump(mode="json", exclude_defaults=True)


# -- the complexity verdict's list ---------------------------------------------------------------


def test_the_list_knows_every_signal() -> None:
    """A new signal must be appended to `SIGNALS` (else its verdicts are stored as dicts)."""
    assert set(SIGNAL_NAMES) <= set(cf.SIGNALS)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_a_complexity_verdict_packs_exactly(prompt: str) -> None:
    v = complexity_verdict(prompt)
    compact, _ = forms.verdict_json(v)
    packed = cf.pack(compact, v.at)
    assert packed is not None
    assert orjson.loads(orjson.dumps(packed)) == packed
    assert cf.unpack(packed) == {**compact, "at": v.at}


def test_what_the_list_cannot_hold_stays_a_dict() -> None:
    base = forms.compact_verdict(complexity_verdict(PROMPTS[1]))
    metrics = base["metrics"]
    zero = {**base, "metrics": {**metrics, "signals": {**metrics["signals"], "latex": 0.0}}}
    custom = {**base, "reason": "complexity score 0.50 (model mine.json)"}
    bare = {k: x for k, x in base.items() if k != "reason"} | {"metrics": {"score": 0.5}}
    for kept in (zero, custom, bare):  # packed, and exactly
        packed = cf.pack(kept, 1.0)
        assert packed is not None and cf.unpack(packed) == {**kept, "at": 1.0}
    unknown = {**base, "metrics": {**metrics, "signals": {"new_signal": 1.0}}}
    whole = {**base, "metrics": {**metrics, "signals": {"log_chars": 5}}}
    extra = {**base, "metrics": {**metrics, "other": 1}}
    stale = {**base, "stale": True}
    other = {**base, "agent": "mine"}
    for refused in (unknown, whole, extra, stale, other):
        assert cf.pack(refused, 1.0) is None


async def test_an_older_database_reads_with_new_records_beside(tmp_path: Path) -> None:
    """A format 2 row referring to values by content key, and format 3 rows written after it."""
    db = tmp_path / "o.db"
    async with SqliteStore(db) as store:
        await store.record(records(1)[0])
    conn = sqlite3.connect(db)
    try:
        conn.execute(
            "INSERT INTO requests (id, created_at, status, prompt_sha256, features, detail)"
            " VALUES ('old', 1.0, 'error', '', '[1,1,1,1]', ?)",
            (FORMAT_2_BLOB,),
        )
        conn.executemany("INSERT INTO shared (key, json) VALUES (?, ?)", SHARED_2)
        conn.commit()
    finally:
        conn.close()
    async with SqliteStore(db) as store:
        await store.record(records(2)[1])
        history = await store.history(limit=10)
    assert [h["request_id"] for h in history][-1] == "old" and len(history) == 3
    old = history[-1]
    assert [v["agent"] for v in old["verdicts"]] == ["resource", "complexity"]
    assert old["verdicts"][1]["metrics"]["signals"] == {"latex": 0.693, "log_chars": 5.338}
    assert old["verdicts"][0]["at"] == 10.0
    assert old["decision"]["candidates"] == [{"model": "m1", "tier": "edge", "reason": "#1"}]
    assert all(len(h["verdicts"]) == 6 for h in history[:2])


def test_a_version_9_database_keeps_its_prompt_hashes_as_16_bytes(tmp_path: Path) -> None:
    """Schema 10 turns each stored hex digest into its first 16 bytes; the rest reads as before."""
    from orchestra.store.schema import MIGRATIONS, SCHEMA_VERSION, statements

    db = tmp_path / "o.db"
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        for step in MIGRATIONS[:9]:
            if callable(step):
                step(conn)
            else:
                for statement in statements(step):
                    conn.execute(statement)
        conn.execute("PRAGMA user_version = 9")
        conn.execute(
            "INSERT INTO requests (id, created_at, status, prompt_sha256, features, detail)"
            " VALUES ('old', 1.0, 'error', ?, '[1,1,1,1]', ?)",
            ("ab" * 32, FORMAT_2_BLOB),
        )
        conn.executemany("INSERT INTO shared (key, json) VALUES (?, ?)", SHARED_2)
    finally:
        conn.close()

    async def read() -> list[dict[str, Any]]:
        async with SqliteStore(db) as store:
            await store.record(records(1)[0])
            return await store.history()

    history = asyncio.run(read())
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        hashes = conn.execute("SELECT prompt_sha256 FROM requests ORDER BY rowid").fetchall()
    finally:
        conn.close()
    assert hashes[0] == (b"\xab" * 16,)
    assert isinstance(hashes[1][0], bytes) and len(hashes[1][0]) == 16
    assert history[-1]["verdicts"][1]["metrics"]["signals"] == {"latex": 0.693, "log_chars": 5.338}


async def test_a_value_a_failed_write_was_to_share_is_written_again(tmp_path: Path) -> None:
    """An ambient verdict is shared from its first record; when that record's write fails, the
    value is not in `shared`, and the next record must write it, not refer to it in vain."""
    db = tmp_path / "f.db"
    sample = Verdict(agent="resource", target=Tier.LOCAL, confidence=0.2, reason="headroom",
                     metrics={"cores": 2}, at=5.0)  # fmt: skip

    def record(prompt: str) -> RequestRecord:
        return RequestRecord(request=Request.of(prompt), verdicts=(sample,), decision=None,
                             result=None, created_at=time.time(), latency_ms=1.0,
                             ambient=frozenset({"resource"}))  # fmt: skip

    refused, kept = record("refused"), record("kept")
    async with SqliteStore(db) as store:
        conn = sqlite3.connect(db)
        conn.execute(  # a trigger takes no parameters; the id is our own hex
            f"CREATE TRIGGER refuse BEFORE INSERT ON requests WHEN NEW.id = '{refused.request.id}'"
            " BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
        conn.commit()
        conn.close()
        with pytest.raises(StoreError):
            await store.record(refused)
        await store.record(kept)
        history = await store.history(limit=10)
    assert [h["request_id"] for h in history] == [kept.request.id]
    verdicts = history[0]["verdicts"]
    assert [(v["agent"], v["reason"]) for v in verdicts] == [("resource", "headroom")]


def test_the_lean_reading_refers_to_the_same_shared_values_in_every_format() -> None:
    recs = records(4)
    interner = Interner()
    blobs = [encode(r.decision, r.verdicts, r.attempts, r.ambient, interner)[0] for r in recs]
    blobs += [format_2(r) for r in recs]
    for blob in blobs:
        assert lean_refs([decode_lean(blob)]) == set(refs_of(decode(blob)))
    assert any(lean_refs([decode_lean(b)]) for b in blobs[:4]), "format 3 refers to some"
    assert decode_lean(blobs[5]) == decode(blobs[5]), "older formats read as `decode` reads"
