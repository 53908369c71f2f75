"""What the store keeps of one request, and how it becomes rows."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from orchestra.core.decision import Decision
from orchestra.core.request import Request, new_request_id
from orchestra.core.result import Attempt, Result
from orchestra.core.verdict import Verdict
from orchestra.spend.ledger import Charge
from orchestra.store.detail import Interner, encode
from orchestra.store.forms import transcript


@dataclass(frozen=True, kw_only=True)
class RequestRecord:
    """One finished request, answered or failed, as handed to the store's writer."""

    request: Request
    verdicts: Sequence[Verdict]
    decision: Decision | None
    result: Result | None
    attempts: Sequence[Attempt] = ()
    created_at: float
    latency_ms: float
    stream: bool = False
    error_kind: str | None = None
    error: str | None = None
    keep_text: bool = False
    # Agents whose verdicts are ambient samples: stored once, referred to by key.
    ambient: frozenset[str] = frozenset()
    # What the calls cost, for the ledger; None: one answer charge taken from `result`.
    charges: Sequence[Charge] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return "ok" if self.result is not None else "error"

    @property
    def cost_usd(self) -> float:
        """What the request cost in all: its answer, and any call billed for what it sent before
        it broke or was left (a failed request may have cost something too)."""
        if self.charges is None:
            return self.result.cost_usd if self.result is not None else 0.0
        return float(sum(c.cost_usd for c in self.charges))

    def ledger_charges(self) -> Sequence[Charge]:
        if self.charges is not None:
            return self.charges
        res = self.result
        if res is None:
            return ()
        return (
            Charge(model=res.model, tier=res.tier, prompt_tokens=res.prompt_tokens,
                   completion_tokens=res.completion_tokens, cost_usd=res.cost_usd,
                   at=self.created_at),
        )  # fmt: skip


@dataclass(slots=True)
class RecordId:
    """The id a call's record is written under: its request's, unless another call's record
    already has that one (another runtime, process or host chose the same id, or it was reused
    after a restart). Records are inserted, never upserted, so the database itself says so (a
    unique violation, however the processes race); the writer then `renew`s the id and writes
    the record again. The default random id never collides: it costs nothing on that path."""

    value: str

    def renew(self) -> str:
        self.value = new_request_id()
        return self.value


RENEWALS = 5  # fresh ids tried for one record before its write fails


FEATURES = ("chars", "words", "lines", "messages")
# The prompt's hash as stored (`prompt_sha256`, schema 10): the first bytes of its SHA-256.
PROMPT_HASH_BYTES = 16


def features_of(text: str) -> dict[str, int]:
    """Stored features as a dict: kept as a list in `FEATURES` order (older rows: a dict)."""
    value = json.loads(text)
    return dict(zip(FEATURES, value, strict=False)) if isinstance(value, list) else value


def prompt_features(request: Request) -> dict[str, int]:
    """Shape of the prompt, kept instead of its text by default."""
    prompt = request.prompt
    return {
        "chars": len(prompt),
        "words": len(prompt.split()),
        "lines": prompt.count("\n") + 1 if prompt else 0,
        "messages": len(request.messages),
    }


def _answered_by(rec: RequestRecord) -> tuple[str | None, str | None, int, int]:
    """(model, tier, prompt tokens, answer tokens) of what answered: the result, or for a request
    that ended without one, the calls that sent part of an answer before it broke or was left
    (the last one's model; their tokens, as charged)."""
    res = rec.result
    if res is not None:
        return res.model, res.tier.value, res.prompt_tokens, res.completion_tokens
    partial = [c for c in rec.ledger_charges() if c.kind == "partial"]
    if not partial:
        return None, None, 0, 0
    last = partial[-1]
    return (
        last.model,
        str(last.tier),
        sum(c.prompt_tokens for c in partial),
        sum(c.completion_tokens for c in partial),
    )


def request_row(rec: RequestRecord, detail: bytes) -> tuple[Any, ...]:
    req, res, dec = rec.request, rec.result, rec.decision
    text = transcript(req.messages)
    model, tier, prompt_tokens, completion_tokens = _answered_by(rec)
    return (
        req.id,
        rec.created_at,
        rec.status,
        model,
        tier,
        rec.cost_usd,
        rec.latency_ms,
        prompt_tokens,
        completion_tokens,
        hashlib.sha256(text.encode()).digest()[:PROMPT_HASH_BYTES],
        orjson.dumps(list(prompt_features(req).values())).decode(),
        text if rec.keep_text else None,
        res.text if (res and rec.keep_text) else None,
        req.model,
        req.tier.value if req.tier else None,
        int(rec.stream),
        dec.policy if dec else None,
        None,  # the decision lives in `detail` (schema 9)
        rec.error_kind,
        rec.error,
        detail,
    )


_HASH_AT = 9  # the prompt hash's place in a request row


def current_request_row(row: Sequence[Any]) -> tuple[Any, ...]:
    """A request row as schema 10 keeps it: one spilled by an earlier version (PostgreSQL's
    spill file outlives an upgrade) holds the prompt hash as 64 hex digits."""
    digest = row[_HASH_AT]
    if not isinstance(digest, str):
        return tuple(row)
    return (*row[:_HASH_AT], bytes.fromhex(digest[: 2 * PROMPT_HASH_BYTES]), *row[_HASH_AT + 1 :])


Statements = list[tuple[str, list[tuple[Any, ...]]]]  # (SQL, its rows), as the writer runs them
# A plain insert: a record never replaces another call's record (see `RecordId`).
INSERT_REQUEST = f"INSERT INTO requests VALUES ({', '.join('?' * 21)})"
INSERT_SAMPLE = "INSERT INTO samples (agent, at, state, verdict) VALUES (?, ?, ?, ?)"


INSERT_SHARED = "INSERT OR IGNORE INTO shared (key, json) VALUES (?, ?)"


def record_rows(rec: RequestRecord, interner: Interner) -> Statements:
    """The statements that store one request: its row (the decision, verdicts and attempts in
    its compressed `detail`) and the shared values it refers to for the first time (its charges
    go to the ledger separately, see `sqlite_ledger.charge`)."""
    blob, new = encode(rec.decision, rec.verdicts, rec.attempts, rec.ambient, interner)
    out = [(INSERT_REQUEST, [request_row(rec, blob)])]
    if new:
        out.append((INSERT_SHARED, new))
    return out


def renamed(statements: Statements, rid: str) -> Statements:
    """A record's statements (see `record_rows`) with its request row under the id `rid`."""
    return [
        (sql, [(rid, *row[1:]) for row in rows] if sql == INSERT_REQUEST else rows)
        for sql, rows in statements
    ]


def sample_row(verdict: Verdict) -> tuple[Any, ...]:
    """A sample of an ambient agent, for the agents' time series."""
    # `fallback=str`: an agent's metrics may hold values JSON does not know; keep their text.
    return (verdict.agent, verdict.at, verdict.state, verdict.model_dump_json(fallback=str))
