"""A thin synchronous wrapper for scripts: the async runtime behind anyio's blocking portal."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal

from orchestra.agents.base import Agent
from orchestra.config import Config
from orchestra.core.feedback import Feedback
from orchestra.core.result import Result
from orchestra.runtime import Orchestra, Prompt


class SyncOrchestra:
    """`Orchestra` for code without an event loop::

        with SyncOrchestra() as orc:
            print(orc.complete("What is the capital of France?").text)

    The runtime runs on an event loop in its own thread (an anyio blocking portal), so ambient
    agents keep sampling between calls. Arguments are those of `Orchestra`.
    """

    def __init__(self, config: Config | str | Path | None = None, **kwargs: Any) -> None:
        self._orc = Orchestra(config, **kwargs)
        self._portal_cm: AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None

    @property
    def runtime(self) -> Orchestra:
        return self._orc

    def __enter__(self) -> SyncOrchestra:
        self._portal_cm = start_blocking_portal("asyncio")
        self._portal = self._portal_cm.__enter__()
        try:
            self._portal.call(self._orc.start)
        except BaseException as exc:
            self._stop_portal(exc)
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._portal is None:
            return
        try:
            self._portal.call(self._orc.close)
        finally:
            self._stop_portal(None)

    def complete(self, prompt: Prompt, **hints: Any) -> Result:
        return self._require_portal().call(lambda: self._orc.complete(prompt, **hints))

    def stream(self, prompt: Prompt, **hints: Any) -> Iterator[str]:
        """Yield text pieces as they arrive."""
        portal = self._require_portal()
        pieces = portal.call(lambda: self._orc.stream(prompt, **hints).__aiter__())
        try:
            while True:
                try:
                    yield portal.call(pieces.__anext__)
                except StopAsyncIteration:
                    return
        finally:
            close = getattr(pieces, "aclose", None)
            if close is not None:
                portal.call(close)

    def hook_agent(self, agent: Agent) -> None:
        self._require_portal().call(self._orc.hook_agent, agent)

    def history(self, limit: int = 20) -> list[dict[str, Any]]:
        return self._require_portal().call(lambda: self._orc.history(limit=limit))

    def spend_summary(self) -> dict[str, Any]:
        return self._require_portal().call(self._orc.spend_summary)

    def feedback(self, request_id: str, good: bool, note: str | None = None) -> Feedback:
        return self._require_portal().call(self._orc.feedback, request_id, good, note)

    def _require_portal(self) -> BlockingPortal:
        if self._portal is None:
            raise RuntimeError("SyncOrchestra is not open: use `with SyncOrchestra() as orc`")
        return self._portal

    def _stop_portal(self, exc: BaseException | None) -> None:
        cm, self._portal_cm, self._portal = self._portal_cm, None, None
        if cm is not None:
            # Leaving the portal cancels what is left on its loop (e.g. LiteLLM's logging worker).
            cm.__exit__(type(exc) if exc else None, exc, exc.__traceback__ if exc else None)


def complete_sync(
    prompt: Prompt, config: Config | str | Path | None = None, **hints: Any
) -> Result:
    """Answer one prompt from a script: starts a runtime, answers, shuts it down."""
    with SyncOrchestra(config) as orc:
        return orc.complete(prompt, **hints)
