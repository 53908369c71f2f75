"""The three breaker states as small objects; each overrides only the hooks it needs.

A state holds its own data (counters, opened-at, the trial in flight) and asks the breaker to
`_move` when it is done. Hooks run under the breaker's lock with one clock reading, `now`.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from orchestra.execution.breaker.breaker import CircuitBreaker

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STATES = (CLOSED, OPEN, HALF_OPEN)


class BreakerState:
    """Base: lets every call through and ignores outcomes."""

    name: ClassVar[str]
    failures: int = 0
    opened_at: float | None = None

    def before_call(self, cb: CircuitBreaker, now: float) -> bool:
        return True

    def why_not(self, cb: CircuitBreaker, now: float) -> str:
        return ""

    def wait_s(self, cb: CircuitBreaker, now: float) -> float | None:
        """Seconds until a call may go through, when known (0: now)."""
        return 0.0

    def on_success(self, cb: CircuitBreaker, now: float) -> None:
        pass

    def on_failure(self, cb: CircuitBreaker, now: float, reason: str) -> None:
        pass

    def on_release(self, cb: CircuitBreaker, now: float) -> None:
        pass


class ClosedState(BreakerState):
    """Calls flow; trips on consecutive failures or on the failure rate of a sliding window."""

    name = CLOSED

    def __init__(self, window: int, failures: int = 0) -> None:
        self.failures = failures
        self.outcomes: deque[bool] = deque(maxlen=window)  # True = failed

    def on_success(self, cb: CircuitBreaker, now: float) -> None:
        self.outcomes.append(False)
        self.failures = 0

    def on_failure(self, cb: CircuitBreaker, now: float, reason: str) -> None:
        self.outcomes.append(True)
        self.failures += 1
        why = self._trip_reason(cb)
        if why is not None:
            cb._move(OpenState(now, self.failures), _with_last(why, reason), now)

    def _trip_reason(self, cb: CircuitBreaker) -> str | None:
        settings = cb.settings
        if self.failures >= settings.failure_threshold:
            return f"{self.failures} consecutive failures"
        calls = len(self.outcomes)
        rate = sum(self.outcomes) / calls if calls else 0.0
        if calls >= settings.min_calls and rate >= settings.failure_rate:
            return f"failure rate {rate:.0%} over the last {calls} calls"
        return None


class OpenState(BreakerState):
    """No calls for `recovery_s`; then the next caller moves it to half-open and goes through."""

    name = OPEN

    def __init__(self, opened_at: float, failures: int) -> None:
        self.opened_at = opened_at
        self.failures = failures

    def before_call(self, cb: CircuitBreaker, now: float) -> bool:
        if self._left(cb, now) > 0:
            return False
        recovery = f"{cb.settings.recovery_s:g} s recovery over; one trial call"
        cb._move(HalfOpenState(self.opened_at, self.failures), recovery, now)
        return cb._state.before_call(cb, now)

    def why_not(self, cb: CircuitBreaker, now: float) -> str:
        left = self._left(cb, now)
        return f"breaker open ({math.ceil(left)} s left)" if left > 0 else ""

    def wait_s(self, cb: CircuitBreaker, now: float) -> float | None:
        return max(0.0, self._left(cb, now))

    def on_success(self, cb: CircuitBreaker, now: float) -> None:
        # A call made while open (a local model tried when nothing else could answer) that
        # succeeded says the model works again, as a trial call would.
        cb._move(ClosedState(cb.settings.window), "a call made while open succeeded", now)

    def _left(self, cb: CircuitBreaker, now: float) -> float:
        assert self.opened_at is not None
        # A wall clock stepped backwards must not hold the breaker open for longer than a period.
        self.opened_at = min(self.opened_at, now)
        return self.opened_at + cb.settings.recovery_s - now


class HalfOpenState(BreakerState):
    """Exactly one trial call at a time; its outcome closes or reopens the breaker."""

    name = HALF_OPEN

    def __init__(self, opened_at: float | None, failures: int) -> None:
        self.opened_at = opened_at
        self.failures = failures
        self.trial_since: float | None = None

    def before_call(self, cb: CircuitBreaker, now: float) -> bool:
        if self._trial_out(cb, now):
            return False
        self.trial_since = now
        return True

    def why_not(self, cb: CircuitBreaker, now: float) -> str:
        return "breaker half-open (trial call in flight)" if self._trial_out(cb, now) else ""

    def wait_s(self, cb: CircuitBreaker, now: float) -> float | None:
        return None if self._trial_out(cb, now) else 0.0  # the trial's outcome decides

    def on_success(self, cb: CircuitBreaker, now: float) -> None:
        cb._move(ClosedState(cb.settings.window), "trial call succeeded", now)

    def on_release(self, cb: CircuitBreaker, now: float) -> None:
        self.trial_since = None  # the trial taught nothing: the next caller makes it

    def on_failure(self, cb: CircuitBreaker, now: float, reason: str) -> None:
        why = _with_last("trial call failed", reason)
        cb._move(OpenState(now, self.failures + 1), why, now)

    def _trial_out(self, cb: CircuitBreaker, now: float) -> bool:
        # A trial whose caller never reported (cancelled, crashed) is presumed lost after one
        # recovery period, or the breaker would stay half-open forever.
        if self.trial_since is None:
            return False
        self.trial_since = min(self.trial_since, now)  # as in OpenState: a clock stepped back
        return now < self.trial_since + cb.settings.recovery_s


def _with_last(why: str, reason: str) -> str:
    return f"{why} (last: {reason})" if reason else why
