"""A policy's decision: the models to try, in order, and why."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from orchestra.core.tier import Tier


class Candidate(BaseModel):
    """A model to try, with the reason for its place in the failover chain."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    tier: Tier
    reason: str = ""


class Exclusion(BaseModel):
    """A tier or model the policy removed, and which agent (or rule) removed it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tier: Tier | None = None
    model: str | None = None
    by: str
    reason: str


class Decision(BaseModel):
    """The ordered failover chain chosen by a policy, with its explanation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy: str
    candidates: tuple[Candidate, ...]
    reason: str
    target: Tier | None = None
    votes: dict[Tier, float] = Field(default_factory=dict)
    excluded: tuple[Exclusion, ...] = ()
