"""Retrying one model: exponential backoff with jitter, honouring Retry-After, within a deadline."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from orchestra.core.errors import ProviderError

Seconds = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]


class RetryPolicy(BaseModel):
    """`[retry]`: how often and how long to wait before trying the same model again.

    `retry` counts retries, not attempts: retry 1 is the second attempt of a model.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    attempts_per_model: StrictInt = Field(default=2, ge=1)
    base_s: Seconds = 0.25
    cap_s: Seconds = 8.0
    jitter: float = Field(default=1.0, ge=0.0, le=1.0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _cap_not_below_base(self) -> RetryPolicy:
        if self.cap_s < self.base_s:
            raise ValueError(f"cap_s ({self.cap_s}) must be >= base_s ({self.base_s})")
        return self

    def backoff_s(self, retry: int, rng: random.Random) -> float:
        """The wait before retry number `retry` (1, 2, ...): base * 2**(retry-1), capped, jittered.

        With jitter j the wait is uniform in [(1 - j) * backoff, backoff], so it never exceeds the
        un-jittered value; j = 1 is "full jitter", which spreads clients that failed together.
        """
        if retry < 1:
            raise ValueError(f"retry counts from 1, got {retry}")
        try:
            raw = self.base_s * 2.0 ** (retry - 1)
        except OverflowError:  # a huge retry number; the cap applies anyway
            raw = math.inf
        ceiling = min(self.cap_s, raw)
        if self.jitter == 0.0:
            return ceiling
        return ceiling * (1.0 - self.jitter * rng.random())

    def wait_before_retry(
        self, error: ProviderError, retry: int, remaining_s: float, rng: random.Random
    ) -> float | None:
        """Seconds to wait before retry number `retry` of the model that raised `error`.

        None means: do not retry this model (move on to the next candidate), because the error
        is not retryable, the retries are used up, or the wait would not fit in `remaining_s`.
        A Retry-After longer than `cap_s` also gives None: retrying sooner than the provider
        asked would most likely fail again, so another candidate is the better use of the time.
        """
        if not error.retryable or retry >= self.attempts_per_model:
            return None
        wait = self.backoff_s(retry, rng)
        after = error.retry_after_s
        if after is not None and math.isfinite(after) and after > 0:
            if after > self.cap_s:
                return None
            wait = max(wait, after)
        # A wait that uses up the whole deadline leaves no time for the attempt itself.
        if wait >= remaining_s:
            return None
        return wait


class Deadline:
    """A request's overall deadline, read from an injectable monotonic clock."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        if math.isnan(seconds) or seconds <= 0:
            raise ValueError(f"a deadline must be > 0 seconds, got {seconds!r}")
        self.seconds = seconds
        self._clock = clock
        self._ends_at = clock() + seconds

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self._ends_at - self._clock())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def attempt_timeout(self, per_attempt_s: float) -> float:
        """The next attempt's timeout: its own limit, shortened to what the deadline leaves."""
        if math.isnan(per_attempt_s) or per_attempt_s <= 0:
            raise ValueError(f"per_attempt_s must be > 0, got {per_attempt_s!r}")
        return min(per_attempt_s, self.remaining())
