"""`within`: an agent's check awaited within its time, stepped by hand when it never waits."""

from __future__ import annotations

import asyncio

import pytest

from orchestra.agents.eager import within


async def test_a_check_that_never_waits_arms_no_timer() -> None:
    armed: list[object] = []
    loop = asyncio.get_running_loop()
    real_call_at = loop.call_at

    def call_at(*args: object, **kwargs: object) -> asyncio.TimerHandle:
        armed.append(args)
        return real_call_at(*args, **kwargs)  # type: ignore[arg-type]

    loop.call_at = call_at  # type: ignore[method-assign]
    try:

        async def check() -> str:
            return "verdict"

        assert await within(check(), 0.5) == "verdict"
    finally:
        del loop.call_at
    assert armed == []


async def test_a_check_that_waits_gets_its_answer() -> None:
    async def check() -> int:
        await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        return 7

    assert await within(check(), 1.0) == 7


async def test_a_check_that_waits_too_long_is_cut_and_cancelled() -> None:
    cleaned: list[str] = []

    async def check() -> int:
        try:
            await asyncio.sleep(10)
        finally:
            cleaned.append("finally")
        return 1

    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await within(check(), 0.05)
    assert loop.time() - started < 1.0
    assert cleaned == ["finally"]


async def test_the_deadline_counts_from_the_start_not_from_the_first_wait() -> None:
    async def check() -> int:
        await asyncio.sleep(0)
        await asyncio.sleep(0.06)
        await asyncio.sleep(0.06)
        return 1

    with pytest.raises(TimeoutError):
        await within(check(), 0.1)


async def test_errors_reach_the_caller_before_and_after_a_wait() -> None:
    async def at_once() -> int:
        raise ValueError("at once")

    async def later() -> int:
        await asyncio.sleep(0)
        raise KeyError("later")

    with pytest.raises(ValueError, match="at once"):
        await within(at_once(), 1.0)
    with pytest.raises(KeyError, match="later"):
        await within(later(), 1.0)


async def test_a_check_hears_its_timeout_where_it_waits() -> None:
    async def check() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "gave up cleanly"  # as under asyncio.timeout: its answer is returned (late)
        return "slept"

    assert await within(check(), 0.02) == "gave up cleanly"


async def test_cancelling_the_caller_cancels_the_check() -> None:
    cancelled = asyncio.Event()

    async def check() -> int:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 1

    task = asyncio.ensure_future(within(check(), 5.0))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set()


async def test_any_awaitable_works() -> None:
    future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    future.set_result("ready")
    assert await within(future, 1.0) == "ready"
