"""RateLimiter on virtual time: waits, refusals, priority, deadlines, token accounting."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from collections.abc import Awaitable, Coroutine
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestra.core.errors import ProviderError, RateLimitedError
from orchestra.execution.rate_limit import RateLimit, RateLimiter
from orchestra.execution.retry import RetryPolicy


class VirtualTime:
    """A clock and a sleep that only move when the test says so (or when everyone is asleep)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + delay, next(self._seq), future))
        await future

    async def idle(self) -> None:
        """Let every runnable task run until all are blocked."""
        for _ in range(20):
            await asyncio.sleep(0)

    def _next_wake(self) -> float | None:
        while self._sleepers and self._sleepers[0][2].done():  # cancelled timers
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    async def _wake_next(self) -> None:
        when, _, future = heapq.heappop(self._sleepers)
        self.now = max(self.now, when)
        future.set_result(None)
        await self.idle()

    async def advance(self, seconds: float) -> None:
        target = self.now + seconds
        await self.idle()
        while (wake := self._next_wake()) is not None and wake <= target:
            await self._wake_next()
        self.now = target
        await self.idle()

    async def run(self, *aws: Awaitable[Any]) -> list[Any]:
        """Run `aws` to completion, jumping the clock from one sleeper to the next."""
        tasks = [asyncio.ensure_future(a) for a in aws]
        for _ in range(100_000):  # a bound, so a busy loop fails the test instead of hanging
            await self.idle()
            if all(t.done() for t in tasks):
                return [t.exception() or t.result() for t in tasks]
            if self._next_wake() is None:
                raise AssertionError("deadlock: tasks pending but nobody is sleeping")
            await self._wake_next()
        raise AssertionError("too many wake-ups: a busy loop?")


def limiter(vt: VirtualTime, **limit: Any) -> RateLimiter:
    return RateLimiter("gpt-test", RateLimit(**limit), clock=vt.clock, sleep=vt.sleep)


async def timed(vt: VirtualTime, aw: Coroutine[Any, Any, None], log: list[Any], name: str) -> None:
    await aw
    log.append((name, vt.now))


async def test_under_the_rpm_limit_nothing_waits() -> None:
    vt = VirtualTime()
    lim = limiter(vt, requests_per_minute=5)
    for _ in range(5):
        await lim.acquire(0)
    assert vt.sleeps == []


async def test_without_limits_nothing_waits() -> None:
    vt = VirtualTime()
    lim = limiter(vt)
    for _ in range(1000):
        await lim.acquire(10_000)
    assert vt.sleeps == []


async def test_over_the_limit_next_raises_at_once() -> None:
    vt = VirtualTime()
    lim = limiter(vt, requests_per_minute=2, when_limited="next")
    await lim.acquire(0)
    vt.now = 15.0
    await lim.acquire(0)
    vt.now = 20.0
    with pytest.raises(RateLimitedError, match="2 requests per minute") as info:
        await lim.acquire(0)
    err = info.value
    assert isinstance(err, ProviderError)
    assert (err.kind, err.reason, err.model) == ("rate_limit", "limited", "gpt-test")
    assert err.retry_after_s == pytest.approx(40.0)  # the first grant leaves the window at 60
    assert not err.retryable  # the executor should move on, not retry this model
    assert vt.sleeps == []


async def test_a_local_refusal_is_not_retried_by_the_retry_policy() -> None:
    err = RateLimitedError("x", model="m", reason="limited", retry_after_s=1.0)
    policy = RetryPolicy(attempts_per_model=5)
    assert policy.wait_before_retry(err, 1, 100.0, random.Random(0)) is None


async def test_over_the_limit_wait_sleeps_exactly_until_capacity_frees() -> None:
    vt = VirtualTime()
    lim = limiter(vt, requests_per_minute=2)
    await lim.acquire(0)
    vt.now = 10.0
    await lim.acquire(0)
    vt.now = 20.0
    task = asyncio.ensure_future(lim.acquire(0))
    await vt.advance(39.9)
    assert not task.done()
    await vt.advance(0.1)
    assert task.done() and task.result() is None
    assert vt.now == pytest.approx(60.0)
    assert vt.sleeps == [pytest.approx(40.0)]  # one computed sleep, no polling


async def test_waiters_are_served_by_priority_then_arrival() -> None:
    vt = VirtualTime()
    lim = limiter(vt, requests_per_minute=1)
    await lim.acquire(0)
    log: list[Any] = []
    order = [("low-a", 0), ("low-b", 0), ("high", 5), ("mid", 1), ("low-c", 0)]
    await vt.run(*(timed(vt, lim.acquire(0, priority=p), log, name) for name, p in order))
    assert log == [("high", 60.0), ("mid", 120.0), ("low-a", 180.0), ("low-b", 240.0),
                   ("low-c", 300.0)]  # fmt: skip


async def test_a_newcomer_does_not_overtake_waiters_of_its_priority() -> None:
    vt = VirtualTime()
    lim = limiter(vt, tokens_per_minute=100)
    await lim.acquire(50)
    big = asyncio.ensure_future(lim.acquire(80))  # waits for the 50 to leave the window
    small = asyncio.ensure_future(lim.acquire(10))  # would fit now, but big came first
    urgent = asyncio.ensure_future(lim.acquire(10, priority=1))  # fits, and ranks above both
    await vt.idle()
    assert urgent.done() and not big.done() and not small.done()
    assert lim.queued == 2
    await vt.advance(60.0)
    assert big.done() and small.done()


async def test_a_full_queue_rejects_with_a_clear_message() -> None:
    vt = VirtualTime()
    lim = limiter(vt, requests_per_minute=1, queue_size=2)
    await lim.acquire(0)
    waiting = [asyncio.ensure_future(lim.acquire(0)) for _ in range(2)]
    await vt.idle()
    with pytest.raises(RateLimitedError, match=r"wait queue is full \(2 waiting\)") as info:
        await lim.acquire(0)
    assert info.value.reason == "queue_full"
    await vt.run(*waiting)


async def test_a_wait_that_cannot_meet_the_deadline_fails_at_once() -> None:
    vt = VirtualTime()
    lim = limiter(vt, requests_per_minute=1)
    await lim.acquire(0)
    [err] = await vt.run(lim.acquire(0, deadline_s=30.0))  # run: a bug here fails, not hangs
    assert isinstance(err, RateLimitedError) and err.reason == "deadline"
    assert "capacity frees in 60.00s, after the 30.00s deadline" in str(err)
    assert vt.now == 0.0 and lim.queued == 0


async def test_a_deadline_that_passes_in_the_queue_fails_the_waiter_then() -> None:
    vt = VirtualTime()
    lim = limiter(vt, requests_per_minute=1)
    await lim.acquire(0)
    log: list[Any] = []
    first = timed(vt, lim.acquire(0), log, "first")  # takes the slot at 60
    second = lim.acquire(0, deadline_s=100.0)  # alone it would fit at 60; behind first, at 120

    async def second_fails() -> None:
        with pytest.raises(RateLimitedError, match="deadline passed") as info:
            await second
        log.append((info.value.reason, vt.now))

    await vt.run(first, second_fails())
    assert log == [("first", 60.0), ("deadline", 100.0)]
    assert lim.queued == 0


async def test_capacity_that_frees_at_the_deadline_is_still_granted() -> None:
    vt = VirtualTime()
    lim = limiter(vt, requests_per_minute=1)
    await lim.acquire(0)
    await vt.run(lim.acquire(0, deadline_s=60.0))
    assert vt.now == 60.0


async def test_tokens_per_minute_are_counted_and_settled() -> None:
    vt = VirtualTime()
    lim = limiter(vt, tokens_per_minute=1000, when_limited="next")
    await lim.acquire(600)
    with pytest.raises(RateLimitedError, match="500 more tokens would pass its limit of 1000"):
        await lim.acquire(500)
    lim.settle(600, 300)  # the call used less than estimated: 300 in the window
    await lim.acquire(500)  # 800
    vt.now = 10.0
    lim.settle(500, 900)  # it used more: 1200, over the limit until the early entries leave
    with pytest.raises(RateLimitedError) as info:
        await lim.acquire(1)
    # At 60 the first two entries (300 + 500) leave; the 400 extra, booked at 10, stays till 70.
    assert info.value.retry_after_s == pytest.approx(50.0)
    vt.now = 60.0
    await lim.acquire(600)  # 400 + 600
    with pytest.raises(RateLimitedError):
        await lim.acquire(1)


async def test_settle_wakes_a_waiter_that_now_fits() -> None:
    vt = VirtualTime()
    lim = limiter(vt, tokens_per_minute=1000)
    await lim.acquire(900)
    task = asyncio.ensure_future(lim.acquire(500))
    await vt.idle()
    assert not task.done()
    lim.settle(900, 200)
    await vt.idle()
    assert task.done() and vt.now == 0.0


async def test_a_request_larger_than_the_token_limit_is_refused_even_when_waiting() -> None:
    vt = VirtualTime()
    lim = limiter(vt, tokens_per_minute=1000)
    with pytest.raises(RateLimitedError, match="needs 1001 tokens") as info:
        await lim.acquire(1001)
    assert info.value.reason == "too_large"


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    vt = VirtualTime()
    lim = limiter(vt, requests_per_minute=1)
    await lim.acquire(0)
    doomed = asyncio.ensure_future(lim.acquire(0, priority=9))
    other = asyncio.ensure_future(lim.acquire(0))
    await vt.idle()
    doomed.cancel()
    await vt.idle()
    assert lim.queued == 1
    await vt.run(other)
    assert vt.now == 60.0


async def test_a_grant_cancelled_before_use_is_given_back() -> None:
    vt = VirtualTime()
    lim = limiter(vt, tokens_per_minute=100)
    await lim.acquire(100)
    task = asyncio.ensure_future(lim.acquire(60))
    await vt.idle()
    lim.settle(100, 0)  # grants the waiter's 60 synchronously...
    task.cancel()  # ...but its caller gives up before it runs
    await vt.idle()
    assert task.cancelled()
    again = asyncio.ensure_future(lim.acquire(100))  # fits only if the 60 came back
    await vt.idle()
    assert again.done() and vt.now == 0.0


@pytest.mark.parametrize(
    "settings_",
    [
        {"requests_per_minute": 0},
        {"tokens_per_minute": -5},
        {"requests_per_minute": 1.5},
        {"requests_per_minute": True},
        {"queue_size": 0},
        {"when_limited": "drop"},
    ],
)
def test_nonsense_limits_are_rejected(settings_: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RateLimit(**settings_)


async def test_negative_tokens_are_rejected() -> None:
    with pytest.raises(ValueError):
        await limiter(VirtualTime(), requests_per_minute=1).acquire(-1)


arrivals = st.lists(
    st.tuples(
        st.floats(0.0, 300.0),  # arrival time
        st.integers(0, 400),  # tokens
        st.integers(0, 3),  # priority
        st.one_of(st.none(), st.floats(0.0, 200.0)),  # deadline
    ),
    min_size=1,
    max_size=40,
)


def windows_hold(events: list[tuple[float, int]], limit: int, weight: bool) -> bool:
    """No half-open window [t, t + 60) starting at a grant holds more than `limit`."""
    for start, _ in events:
        inside = [n for t, n in events if start <= t < start + 60.0]
        if (sum(inside) if weight else len(inside)) > limit:
            return False
    return True


@settings(max_examples=150, deadline=None)
@given(arrivals, st.integers(1, 6), st.integers(400, 1500), st.sampled_from(["wait", "next"]))
def test_no_window_ever_exceeds_the_limits(
    plan: list[tuple[float, int, int, float | None]], rpm: int, tpm: int, mode: str
) -> None:
    async def scenario() -> list[tuple[float, int]]:
        vt = VirtualTime()
        lim = limiter(
            vt, requests_per_minute=rpm, tokens_per_minute=tpm, when_limited=mode, queue_size=10
        )
        granted: list[tuple[float, int]] = []

        async def caller(at: float, tokens: int, priority: int, deadline: float | None) -> None:
            await vt.sleep(at)
            try:
                await lim.acquire(tokens, priority=priority, deadline_s=deadline)
            except RateLimitedError:
                return
            granted.append((vt.now, tokens))

        await vt.run(*(caller(*p) for p in plan))
        assert lim.queued == 0
        # Timer sleeps stay few: one per change of state, not a poll.
        assert len(vt.sleeps) <= 4 * len(plan) + 2
        return granted

    granted = asyncio.run(scenario())
    assert windows_hold(granted, rpm, weight=False)
    assert windows_hold(granted, tpm, weight=True)
    if mode == "wait" and all(d is None for *_, d in plan) and len(plan) <= 10:
        assert len(granted) == len(plan)  # nobody waiting without a deadline is dropped
