"""LoopLag tells a loop that runs its timers on time from one that runs them late."""

from __future__ import annotations

import asyncio
import time

from orchestra.core.loop_lag import LoopLag


async def test_an_idle_loop_is_on_time_and_a_blocked_one_is_late() -> None:
    async with LoopLag() as idle:
        await asyncio.sleep(0.1)
    async with LoopLag() as blocked:
        await asyncio.sleep(0.03)  # a tick is due meanwhile
        time.sleep(0.2)  # noqa: ASYNC251 - a callback that blocks the loop
        await asyncio.sleep(0.03)
    assert blocked.worst_s >= 0.15  # the loop was blocked 0.2 s with a tick due
    assert idle.worst_s < blocked.worst_s
    assert blocked._task is None  # the watcher is gone once the block ends
