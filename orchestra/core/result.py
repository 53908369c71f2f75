"""What a completed request returns: the answer and everything that explains it."""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, Field

from orchestra.core.decision import Decision
from orchestra.core.tier import Tier
from orchestra.core.verdict import Verdict


class Attempt(BaseModel):
    """One call to one model, successful or not."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    tier: Tier
    ok: bool
    latency_ms: float
    error_kind: str | None = None
    error: str | None = None
    status_code: int | None = None
    retry_after_s: float | None = None
    retry_in_s: float | None = None  # set when the executor retried this model after this attempt
    skipped: bool = False  # not called: breaker open, or its context window is too small
    cached: bool = False  # answered from the response cache


class Usage(BaseModel):
    """Token counts and cost of one call."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    estimated: bool = False  # the provider reported no usage: the tokens were counted locally


class Result(BaseModel):
    """An answered request: the text, who answered, what it cost, and the decision behind it.

    `cost_usd` is what the request cost in all: the answer, and any call before it that was
    billed, or may have been, without answering (see `ProviderError.sent`); the tokens are the
    answer's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str
    text: str
    model: str
    tier: Tier
    cost_usd: float
    latency_ms: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    decision: Decision
    verdicts: tuple[Verdict, ...]
    attempts: tuple[Attempt, ...] = ()
    # The models in the order the executor planned to try them (after balancing and health).
    order: tuple[str, ...] = ()
    created_at: float = Field(default_factory=time.time)
    # The answer cap the answering call was sent with: the request's, or the one a budget set
    # (None: no cap, or a cached answer). An answer that reached it was most likely cut there.
    max_tokens: int | None = None
    # Why the provider said it stopped ("stop", "length", "content_filter"...), when it said.
    finish_reason: str | None = None
