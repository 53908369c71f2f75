"""The stored JSON forms of a verdict, a decision and an attempt, built from their attributes.

Each equals what pydantic's `model_dump(mode="json", exclude_defaults=True)` gives (a verdict:
also without `at`), at a fraction of its cost: these run before every record's commit. A field
added to one of these models must be added here too (`tests/test_record_forms.py` checks).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import orjson

from orchestra.core.decision import Candidate, Decision
from orchestra.core.request import Message
from orchestra.core.result import Attempt
from orchestra.core.tier import ALL_TIERS, TIERS, Tier
from orchestra.core.verdict import Verdict

# `Tier.value` goes through the enum's descriptor; a dict lookup does not.
_VALUE: dict[Tier, str] = {t: t.value for t in TIERS}
# Datetimes and dataclasses are left to pydantic's conversion (orjson would write its own).
_PLAIN_JSON = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_SORTED_JSON = _PLAIN_JSON | orjson.OPT_SORT_KEYS
# Attempt fields left out when they hold their default.
_ATTEMPT_OPTIONAL: tuple[tuple[str, Any], ...] = (
    ("error_kind", None),
    ("error", None),
    ("status_code", None),
    ("retry_after_s", None),
    ("retry_in_s", None),
    ("skipped", False),
    ("cached", False),
)
# The fields each form knows: a test checks that they are each model's fields.
VERDICT_FIELDS = frozenset(
    ("agent", "target", "allowed", "denied_models", "confidence", "state", "reason", "metrics",
     "at", "stale", "neutral")
)  # fmt: skip
DECISION_FIELDS = frozenset(("policy", "candidates", "reason", "target", "votes", "excluded"))
CANDIDATE_FIELDS = frozenset(("model", "tier", "reason"))
ATTEMPT_FIELDS = frozenset(
    ("model", "tier", "ok", "latency_ms", *(n for n, _ in _ATTEMPT_OPTIONAL))
)


def compact_verdict(v: Verdict) -> dict[str, Any]:
    """A verdict as stored: without `at` and without fields at their default. Its metrics are
    the agent's own values: `verdict_json` checks that JSON can hold them."""
    out: dict[str, Any] = {"agent": v.agent}
    if v.target is not None:
        out["target"] = _VALUE[v.target]
    if v.allowed != ALL_TIERS:
        out["allowed"] = [_VALUE[t] for t in sorted(v.allowed)]
    if v.denied_models:
        out["denied_models"] = sorted(v.denied_models)
    if v.confidence != 0.5:
        out["confidence"] = v.confidence
    if v.state != "ok":
        out["state"] = v.state
    if v.reason:
        out["reason"] = v.reason
    if v.metrics:
        out["metrics"] = v.metrics
    if v.stale:
        out["stale"] = True
    if v.neutral:
        out["neutral"] = True
    return out


def verdict_json(v: Verdict) -> tuple[dict[str, Any], bytes]:
    """The compact verdict and its JSON (sorted keys). Metrics JSON cannot hold as they are (a
    set, a datetime, a non-string key...) are converted as pydantic does, text for the unknown."""
    compact = compact_verdict(v)
    try:
        return compact, orjson.dumps(compact, option=_SORTED_JSON)
    except orjson.JSONEncodeError:
        metrics = v.model_dump(mode="json", fallback=str, include={"metrics"})["metrics"]
        compact = {**compact, "metrics": metrics}
        return compact, orjson.dumps(compact, option=_SORTED_JSON, default=str)


def candidates_form(candidates: Sequence[Candidate]) -> list[dict[str, str]]:
    """A decision's candidates as stored."""
    return [
        {"model": c.model, "tier": _VALUE[c.tier], "reason": c.reason}
        if c.reason
        else {"model": c.model, "tier": _VALUE[c.tier]}
        for c in candidates
    ]


def decision_form(d: Decision) -> dict[str, Any]:
    """A decision as stored, its candidates left for the caller (they may be shared)."""
    out: dict[str, Any] = {"policy": d.policy, "candidates": None, "reason": d.reason}
    if d.target is not None:
        out["target"] = _VALUE[d.target]
    if d.votes:
        out["votes"] = {_VALUE[t]: x for t, x in d.votes.items()}
    if d.excluded:
        out["excluded"] = [e.model_dump(mode="json", exclude_defaults=True) for e in d.excluded]
    return out


def attempt_form(a: Attempt) -> dict[str, Any]:
    """An attempt as stored."""
    out: dict[str, Any] = {"model": a.model, "tier": _VALUE[a.tier], "ok": a.ok,
                           "latency_ms": a.latency_ms}  # fmt: skip
    for name, default in _ATTEMPT_OPTIONAL:
        value = getattr(a, name)
        if value != default:
            out[name] = value
    return out


def transcript(messages: Sequence[Message]) -> str:
    """The messages as the `prompt` column keeps them (and the prompt hash is taken of)."""
    return json.dumps([{"role": m.role, "content": m.content} for m in messages],
                      ensure_ascii=False)  # fmt: skip


def dumps(value: Any) -> bytes:
    """JSON of a stored form (text for what JSON cannot hold)."""
    return orjson.dumps(value, option=_PLAIN_JSON, default=str)
