"""Rows read back as the store's objects: the same on every backend (the SQL that reads them,
and its placeholders, are each dialect's)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import ValidationError

from orchestra.core.feedback import RequestRef
from orchestra.core.model_spec import ModelSpec
from orchestra.core.tier import Tier
from orchestra.core.verdict import Verdict
from orchestra.execution.breaker.storage import BreakerRecord
from orchestra.execution.cache import CachedAnswer
from orchestra.store.base import StoredModel
from orchestra.store.detail import attempts_of, decision_of, decode, refs_of, verdicts_of
from orchestra.store.record import features_of

log = logging.getLogger("orchestra.store")

Rows = Sequence[tuple[Any, ...]]


def details(rows: Rows) -> list[dict[str, Any]]:
    """Each row's decoded detail (its last column; see `orchestra.store.detail`)."""
    return [decode(r[-1]) if r[-1] is not None else {} for r in rows]


def refs(details: Iterable[dict[str, Any]]) -> set[str]:
    """The shared values the details refer to."""
    return {k for d in details for k in refs_of(d)}


def history_entry(
    row: tuple[Any, ...], detail: dict[str, Any], shared: dict[str, str]
) -> dict[str, Any]:
    """A stored request as `history()` gives it: its row and its decoded detail."""
    (rid, created, status, model, tier, cost, latency, pt, ct, features, forced_model,
     forced_tier, stream, error_kind, error, _) = row  # fmt: skip
    return {
        "request_id": rid,
        "created_at": created,
        "status": status,
        "model": model,
        "tier": tier,
        "cost_usd": cost,
        "latency_ms": latency,
        "prompt_tokens": pt,
        "completion_tokens": ct,
        "features": features_of(features),
        "forced_model": forced_model,
        "forced_tier": forced_tier,
        "stream": bool(stream),
        "decision": decision_of(detail, shared),
        "verdicts": verdicts_of(detail, shared),
        "attempts": attempts_of(detail),
        "error_kind": error_kind,
        "error": error,
    }


def latest_feedback(rows: Rows) -> dict[str, dict[str, Any]]:
    """Rows (request_id, good, at, note) by request."""
    return {rid: {"good": bool(good), "at": at, "note": note} for rid, good, at, note in rows}


def complexity_metrics(detail: dict[str, Any], shared: dict[str, str]) -> str | None:
    """The complexity agent's metrics (JSON) as a request recorded them, if it voted."""
    for verdict in verdicts_of(detail, shared):
        if verdict["agent"] == "complexity":
            return json.dumps(verdict["metrics"])
    return None


def samples(rows: Rows) -> list[Verdict]:
    """Rows (verdict) as the verdicts they keep."""
    return [Verdict.model_validate_json(r[0]) for r in rows]


def request_refs(rows: Rows) -> list[RequestRef]:
    """Rows (id, model, tier)."""
    return [RequestRef(str(rid), model, tier) for rid, model, tier in rows]


def breaker_records(rows: Rows) -> dict[str, BreakerRecord]:
    """Rows (model, state, failures, opened_at, updated_at) by model."""
    return {
        model: BreakerRecord(
            state=state, failures=int(failures), opened_at=opened_at, updated_at=updated_at
        )
        for model, state, failures, opened_at, updated_at in rows
    }


def cached_answer(rows: Rows) -> tuple[CachedAnswer, float] | None:
    """The first row (model, tier, text, prompt_tokens, completion_tokens, created_at,
    expires_at) as an answer and when it expires; None without one."""
    if not rows:
        return None
    model, tier, text, prompt_tokens, completion_tokens, created_at, expires_at = rows[0]
    answer = CachedAnswer(
        model=model,
        tier=Tier(tier),
        text=text,
        prompt_tokens=int(prompt_tokens),
        completion_tokens=int(completion_tokens),
        created_at=float(created_at),
    )
    return answer, float(expires_at)


def stored_models(rows: Rows) -> list[StoredModel]:
    """Rows (name, spec, version, updated_at); a spec this version cannot read is skipped."""
    out: list[StoredModel] = []
    for name, spec, version, at in rows:
        try:
            model = ModelSpec.model_validate_json(spec) if spec is not None else None
        except ValidationError as exc:  # written by another version of Orchestra
            log.warning("store: stored model %r is not valid here; ignored: %s", name, exc)
            continue
        out.append(StoredModel(name, model, int(version), float(at)))
    return out
