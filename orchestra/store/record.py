"""What the store keeps of one request, and how it becomes rows."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestra.core.decision import Decision
from orchestra.core.request import Request
from orchestra.core.result import Attempt, Result
from orchestra.core.verdict import Verdict
from orchestra.spend.ledger import Charge


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
    # What the calls cost, for the ledger; None: one answer charge taken from `result`.
    charges: Sequence[Charge] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return "ok" if self.result is not None else "error"

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


def prompt_features(request: Request) -> dict[str, int]:
    """Shape of the prompt, kept instead of its text by default."""
    prompt = request.prompt
    return {
        "chars": len(prompt),
        "words": len(prompt.split()),
        "lines": prompt.count("\n") + 1 if prompt else 0,
        "messages": len(request.messages),
    }


def request_row(rec: RequestRecord) -> tuple[Any, ...]:
    req, res, dec = rec.request, rec.result, rec.decision
    transcript = json.dumps([m.model_dump() for m in req.messages], ensure_ascii=False)
    return (
        req.id,
        rec.created_at,
        rec.status,
        res.model if res else None,
        res.tier.value if res else None,
        res.cost_usd if res else 0.0,
        rec.latency_ms,
        res.prompt_tokens if res else 0,
        res.completion_tokens if res else 0,
        hashlib.sha256(transcript.encode()).hexdigest(),
        json.dumps(prompt_features(req)),
        transcript if rec.keep_text else None,
        res.text if (res and rec.keep_text) else None,
        req.model,
        req.tier.value if req.tier else None,
        int(rec.stream),
        dec.policy if dec else None,
        dec.model_dump_json() if dec else None,
        rec.error_kind,
        rec.error,
    )


def verdict_rows(rec: RequestRecord) -> list[tuple[Any, ...]]:
    return [
        (
            rec.request.id,
            i,
            v.agent,
            v.target.value if v.target else None,
            json.dumps([t.value for t in sorted(v.allowed)]),
            v.confidence,
            v.state,
            v.reason,
            json.dumps(v.metrics, default=str),
            v.at,
            int(v.stale),
            int(v.neutral),
            json.dumps(sorted(v.denied_models)),
        )
        for i, v in enumerate(rec.verdicts)
    ]


def attempt_rows(rec: RequestRecord) -> list[tuple[Any, ...]]:
    return [
        (
            rec.request.id,
            i,
            a.model,
            a.tier.value,
            int(a.ok),
            a.latency_ms,
            a.error_kind,
            a.error,
            a.status_code,
            a.retry_after_s,
            a.retry_in_s,
            int(a.skipped),
            int(a.cached),
        )
        for i, a in enumerate(rec.attempts)
    ]


_INSERT_REQUEST = f"INSERT OR REPLACE INTO requests VALUES ({', '.join('?' * 20)})"
_INSERT_VERDICT = (
    "INSERT OR REPLACE INTO verdicts (request_id, position, agent, target, allowed, confidence,"
    " state, reason, metrics, at, stale, neutral, denied_models)"
    f" VALUES ({', '.join('?' * 13)})"
)
_INSERT_ATTEMPT = (
    "INSERT OR REPLACE INTO attempts (request_id, position, model, tier, ok, latency_ms,"
    " error_kind, error, status_code, retry_after_s, retry_in_s, skipped, cached)"
    f" VALUES ({', '.join('?' * 13)})"
)


def record_rows(rec: RequestRecord) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """The statements that store one request: the request, its verdicts, its attempts (its
    charges go to the ledger separately, see `sqlite_ledger.charge`)."""
    return [
        (_INSERT_REQUEST, [request_row(rec)]),
        (_INSERT_VERDICT, verdict_rows(rec)),
        (_INSERT_ATTEMPT, attempt_rows(rec)),
    ]


def sample_row(verdict: Verdict) -> tuple[Any, ...]:
    # `fallback=str`: an agent's metrics may hold values JSON does not know; keep their text.
    return (verdict.agent, verdict.at, verdict.state, verdict.model_dump_json(fallback=str))
