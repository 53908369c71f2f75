"""A thin synchronous wrapper for scripts: the async runtime on a private event loop thread."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from orchestra.agent import Agent
from orchestra.config import Config
from orchestra.feedback import Feedback
from orchestra.result import Result
from orchestra.runtime import Orchestra, Prompt

T = TypeVar("T")
_DONE = object()


class SyncOrchestra:
    """`Orchestra` for code without an event loop::

        with SyncOrchestra() as orc:
            print(orc.complete("What is the capital of France?").text)

    The runtime runs on its own thread, so ambient agents keep sampling between calls. Arguments
    are those of `Orchestra`.
    """

    def __init__(self, config: Config | str | Path | None = None, **kwargs: Any) -> None:
        self._orc = Orchestra(config, **kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="orchestra", daemon=True
        )

    @property
    def runtime(self) -> Orchestra:
        return self._orc

    def __enter__(self) -> SyncOrchestra:
        self._thread.start()
        try:
            self._call(self._orc.start())
        except BaseException:
            self._stop_loop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._thread.is_alive():
            try:
                self._call(self._orc.close())
            finally:
                self._stop_loop()

    def complete(self, prompt: Prompt, **hints: Any) -> Result:
        return self._call(self._orc.complete(prompt, **hints))

    def stream(self, prompt: Prompt, **hints: Any) -> Iterator[str]:
        """Yield text pieces as they arrive."""
        pieces: queue.Queue[object] = queue.Queue()

        async def pump() -> None:
            try:
                async for text in self._orc.stream(prompt, **hints):
                    pieces.put(text)
            except BaseException as exc:
                pieces.put(exc)
            finally:
                pieces.put(_DONE)

        asyncio.run_coroutine_threadsafe(pump(), self._loop)
        while (item := pieces.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield str(item)

    def hook_agent(self, agent: Agent) -> None:
        self._loop.call_soon_threadsafe(self._orc.hook_agent, agent)

    def history(self, limit: int = 20) -> list[dict[str, Any]]:
        return self._call(self._orc.history(limit=limit))

    def spend_summary(self) -> dict[str, Any]:
        return self._call(self._orc.spend_summary())

    def feedback(self, request_id: str, good: bool, note: str | None = None) -> Feedback:
        return self._call(self._orc.feedback(request_id, good, note))

    def _call(self, coro: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()  # type: ignore[arg-type]

    def _stop_loop(self) -> None:
        # Like asyncio.run: cancel what is left (e.g. LiteLLM's logging worker), then stop.
        try:
            self._call(_cancel_leftovers())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()


async def _cancel_leftovers() -> None:
    loop = asyncio.get_running_loop()
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks(loop) if t is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await loop.shutdown_asyncgens()


def complete_sync(
    prompt: Prompt, config: Config | str | Path | None = None, **hints: Any
) -> Result:
    """Answer one prompt from a script: starts a runtime, answers, shuts it down."""
    with SyncOrchestra(config) as orc:
        return orc.complete(prompt, **hints)
