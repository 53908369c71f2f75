"""An agent's verdict: what one agent thinks about where a request should go."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from orchestra.core.tier import ALL_TIERS, Tier

# States the runtime itself gives a verdict; agents choose their own states otherwise.
STATE_ERROR = "error"
STATE_TIMEOUT = "timeout"
STATE_PENDING = "pending"


class Verdict(BaseModel):
    """One agent's view: a target tier (or none), the tiers it allows, and why.

    `allowed` (tiers) and `denied_models` (catalog names) are hard constraints; `target` with
    `confidence` is a vote. `metrics` holds the raw
    readings behind it (JSON-serialisable values only). `neutral` verdicts (an agent that failed,
    overran its budget or has not sampled yet) carry no vote and no constraint.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent: str
    target: Tier | None = None
    allowed: frozenset[Tier] = ALL_TIERS
    denied_models: frozenset[str] = frozenset()
    confidence: float = Field(default=0.5, ge=0.0, le=1.0)
    state: str = "ok"
    reason: str = ""
    metrics: dict[str, Any] = Field(default_factory=dict)
    at: float = Field(default_factory=time.time)
    stale: bool = False
    neutral: bool = False

    @field_serializer("allowed")
    def _ordered_allowed(self, allowed: frozenset[Tier]) -> list[str]:
        return [t.value for t in sorted(allowed)]

    @field_serializer("denied_models")
    def _ordered_denied(self, denied: frozenset[str]) -> list[str]:
        return sorted(denied)

    @classmethod
    def neutral_for(cls, agent: str, state: str, reason: str) -> Verdict:
        """A verdict that neither votes nor constrains: used when an agent cannot answer."""
        return cls(agent=agent, confidence=0.0, state=state, reason=reason, neutral=True)
