"""How late the event loop has been running what was due, while something is awaited.

A deadline measured on a saturated loop (thousands of calls in flight, a blocking callback, a
long collection) expires while the awaited work sits ready in the loop's queue: its expiry then
measures the loop, not what was awaited. `LoopLag` ticks a timer every `every_s` and keeps the
worst lateness seen, so the caller can tell the two apart.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType


class LoopLag:
    """`async with LoopLag() as lag: ...`, then `lag.worst_s`: the latest a tick ran, in s."""

    def __init__(self, every_s: float = 0.02) -> None:
        self.every_s = every_s
        self.worst_s = 0.0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._watch())
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.every_s
            await asyncio.sleep(self.every_s)
            self.worst_s = max(self.worst_s, loop.time() - due)
