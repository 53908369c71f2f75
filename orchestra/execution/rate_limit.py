"""Per-model request and token limits, enforced before a call leaves the process.

Each limiter keeps a sliding 60-second log of what it granted rather than a token bucket: a bucket
that holds a minute's worth and refills continuously lets up to twice the limit through in one
minute (a full burst, then the refill), which a provider counting per minute would reject. With
the log, no 60-second window ever holds more than the limit, whatever the provider's own algorithm.

Waiting is event-driven: one timer per limiter sleeps exactly until the head of the queue fits (or
the earliest waiter's deadline), then grants waiters in priority order.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from orchestra.core.errors import RateLimitedError, RateLimitReason

WINDOW_S = 60.0


@dataclass(frozen=True, kw_only=True)
class RateLimit:
    """A model's limits; None means unlimited. `when_limited` says whether to queue or move on."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    when_limited: Literal["wait", "next"] = "wait"
    queue_size: int = 100

    def __post_init__(self) -> None:
        limits = {"requests_per_minute": self.requests_per_minute}
        limits |= {"tokens_per_minute": self.tokens_per_minute, "queue_size": self.queue_size}
        for name, value in limits.items():
            # bool is an int subclass, but `True` requests per minute is a mistake.
            ok = value is None and name != "queue_size"
            ok = ok or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)
            if not ok:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.when_limited not in ("wait", "next"):
            raise ValueError(f"when_limited must be 'wait' or 'next', got {self.when_limited!r}")


@dataclass(eq=False)
class _Waiter:
    priority: int
    seq: int
    tokens: int
    deadline_at: float
    future: asyncio.Future[_Grant]

    @property
    def order(self) -> tuple[int, int]:
        # Higher priority first, then first come first served.
        return (-self.priority, self.seq)


@dataclass(eq=False)
class _Grant:
    """What one acquisition put in the logs, so it can be taken back if the caller is cancelled."""

    request_expiry: float | None
    token_entry: list[float] | None = field(default=None)


class RateLimiter:
    """Limits one model's requests and tokens per minute; safe for concurrent asyncio tasks.

    A window is half-open: a grant at time t counts against grants in [t, t + 60).
    """

    def __init__(
        self,
        model: str,
        limit: RateLimit,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.model = model
        self.limit = limit
        self._clock = clock
        self._sleep = sleep
        self._requests: deque[float] = deque()  # expiry times of granted requests
        self._tokens: deque[list[float]] = deque()  # [expiry, tokens], oldest first
        self._token_total = 0.0
        self._waiters: list[_Waiter] = []  # sorted by _Waiter.order
        self._seq = itertools.count()
        self._timer: asyncio.Task[None] | None = None
        self._timer_at = math.inf

    @property
    def queued(self) -> int:
        """How many callers are waiting."""
        return len(self._waiters)

    async def acquire(
        self, tokens: int, *, priority: int = 0, deadline_s: float | None = None
    ) -> None:
        """Take one request and `tokens` tokens, waiting if the limit says so.

        Raises `RateLimitedError` when over the limit with when_limited="next", when the queue is
        full, when the request alone exceeds the token limit, or when capacity would not (or did
        not) free up before `deadline_s` seconds from now.
        """
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens}")
        if deadline_s is not None and math.isnan(deadline_s):
            raise ValueError("deadline_s must be a number of seconds, got NaN")
        tpm = self.limit.tokens_per_minute
        if tpm is not None and tokens > tpm:
            raise self._error(
                "too_large", f"needs {tokens} tokens, more than its limit of {tpm} per minute", None
            )
        now = self._clock()
        self._expire(now)
        ahead = self._waiters and self._waiters[0].priority >= priority
        fits_at = self._fits_at(tokens, now)
        if not ahead and fits_at <= now:
            self._take(tokens, now)
            return
        wait_s = fits_at - now
        if self.limit.when_limited == "next":
            raise self._error("limited", self._over_detail(tokens), wait_s)
        if len(self._waiters) >= self.limit.queue_size:
            raise self._error(
                "queue_full", f"its wait queue is full ({self.limit.queue_size} waiting)", wait_s
            )
        deadline_at = math.inf if deadline_s is None else now + deadline_s
        if fits_at > deadline_at:  # even with nobody ahead it could not fit in time
            raise self._deadline_error(deadline_s, wait_s)
        await self._wait(tokens, priority, deadline_at)

    def settle(self, estimated_tokens: int, actual_tokens: int) -> None:
        """Correct the token log once a call's real usage is known."""
        delta = actual_tokens - estimated_tokens
        if self.limit.tokens_per_minute is None or delta == 0:
            return
        now = self._clock()
        self._expire(now)
        if delta > 0:
            # The extra is booked now, which keeps it in the window a little longer than the
            # original entry would: never undercounting is what matters.
            self._tokens.append([now + WINDOW_S, float(delta)])
            self._token_total += delta
        else:
            # The estimate's own entry is not known, so the refund comes off the oldest entries:
            # they leave the window no later than the right one, so the log never undercounts.
            self._refund_oldest(-delta)
        self._dispatch()

    async def _wait(self, tokens: int, priority: int, deadline_at: float) -> None:
        future: asyncio.Future[_Grant] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(priority, next(self._seq), tokens, deadline_at, future)
        bisect.insort(self._waiters, waiter, key=lambda w: w.order)
        self._dispatch()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.exception() is None:
                self._give_back(future.result())  # granted just as the caller gave up
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            self._dispatch()
            raise

    def _dispatch(self) -> None:
        """Grant waiters that fit, in order; fail those past their deadline; re-arm the timer."""
        now = self._clock()
        self._expire(now)
        while self._waiters and self._fits_at(self._waiters[0].tokens, now) <= now:
            waiter = self._waiters.pop(0)
            waiter.future.set_result(self._take(waiter.tokens, now))
        for waiter in [w for w in self._waiters if w.deadline_at <= now]:
            self._waiters.remove(waiter)
            waiter.future.set_exception(self._deadline_error(None, None))
        self._arm_timer(now)

    def _arm_timer(self, now: float) -> None:
        wake_at = math.inf
        if self._waiters:
            head_fits_at = self._fits_at(self._waiters[0].tokens, now)
            wake_at = min(head_fits_at, *(w.deadline_at for w in self._waiters))
        if wake_at == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = wake_at
        if wake_at < math.inf:
            self._timer = asyncio.get_running_loop().create_task(self._sleep_then_dispatch(wake_at))

    async def _sleep_then_dispatch(self, wake_at: float) -> None:
        await self._sleep(max(0.0, wake_at - self._clock()))
        self._timer = None
        self._timer_at = math.inf
        self._dispatch()

    def _fits_at(self, tokens: int, now: float) -> float:
        """The earliest time (>= now) at which one request of `tokens` fits, given the logs."""
        at = now
        rpm = self.limit.requests_per_minute
        if rpm is not None and len(self._requests) >= rpm:
            at = max(at, self._requests[len(self._requests) - rpm])
        tpm = self.limit.tokens_per_minute
        if tpm is not None:
            excess = self._token_total + tokens - tpm
            for expiry, amount in self._tokens:
                if excess <= 0:
                    break
                excess -= amount
                at = max(at, expiry)
        return at

    def _take(self, tokens: int, now: float) -> _Grant:
        grant = _Grant(request_expiry=None)
        if self.limit.requests_per_minute is not None:
            grant.request_expiry = now + WINDOW_S
            self._requests.append(grant.request_expiry)
        if self.limit.tokens_per_minute is not None and tokens:
            grant.token_entry = [now + WINDOW_S, float(tokens)]
            self._tokens.append(grant.token_entry)
            self._token_total += tokens
        return grant

    def _give_back(self, grant: _Grant) -> None:
        if grant.request_expiry is not None and grant.request_expiry in self._requests:
            self._requests.remove(grant.request_expiry)
        entry = grant.token_entry
        if entry is not None and any(e is entry for e in self._tokens):
            self._token_total -= entry[1]
            entry[1] = 0.0  # expires with its neighbours; removing it would cost a scan anyway

    def _refund_oldest(self, amount: float) -> None:
        for entry in self._tokens:
            if amount <= 0:
                break
            taken = min(entry[1], amount)
            entry[1] -= taken
            self._token_total -= taken
            amount -= taken

    def _expire(self, now: float) -> None:
        while self._requests and self._requests[0] <= now:
            self._requests.popleft()
        while self._tokens and self._tokens[0][0] <= now:
            self._token_total -= self._tokens.popleft()[1]
        if not self._tokens:
            self._token_total = 0.0  # drop float drift once the log is empty

    def _over_detail(self, tokens: int) -> str:
        limit = self.limit
        if limit.requests_per_minute is not None and len(self._requests) >= (
            limit.requests_per_minute
        ):
            return f"it is at its limit of {limit.requests_per_minute} requests per minute"
        if limit.tokens_per_minute is not None:
            return (
                f"{tokens} more tokens would pass its limit of {limit.tokens_per_minute} per "
                f"minute ({self._token_total:.0f} used)"
            )
        return "callers of higher priority are waiting"

    def _deadline_error(self, deadline_s: float | None, wait_s: float | None) -> RateLimitedError:
        if wait_s is None:
            detail = "its deadline passed while it waited for capacity"
        else:
            detail = f"capacity frees in {wait_s:.2f}s, after the {deadline_s:.2f}s deadline"
        return self._error("deadline", detail, wait_s)

    def _error(
        self, reason: RateLimitReason, detail: str, retry_after_s: float | None
    ) -> RateLimitedError:
        return RateLimitedError(
            f"rate limit on {self.model}: {detail}",
            model=self.model,
            reason=reason,
            retry_after_s=retry_after_s,
        )
