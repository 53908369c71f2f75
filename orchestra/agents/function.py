"""Agents from plain functions: `@agent` turns a function into an `Agent`."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, overload

from orchestra.agents.base import Agent
from orchestra.core.request import Request
from orchestra.core.verdict import Verdict

# What an agent function may return: a full Verdict, the fields of one, or None for "no opinion".
AgentReturn = Verdict | Mapping[str, Any] | None
AgentFunction = Callable[[Request | None], AgentReturn | Awaitable[AgentReturn]]


class FunctionAgent(Agent):
    """An agent whose check is a function, sync or async.

    The function gets the request (None for an ambient sample) and returns a `Verdict`, a mapping
    of verdict fields (`target`, `allowed`, `confidence`, `state`, `reason`, `metrics`), or None
    for no opinion. A synchronous ambient function runs in a worker thread (it may block); a
    synchronous per-request one runs inline (it must be fast).
    """

    def __init__(
        self,
        fn: AgentFunction,
        *,
        name: str | None = None,
        interval: float | None = None,
        timeout_s: float = 0.05,
    ) -> None:
        self.fn = fn
        self._name = name or getattr(fn, "__name__", "agent").replace("_", "-")
        self.interval = interval
        self.timeout_s = timeout_s
        self._is_async = inspect.iscoroutinefunction(fn)

    @property
    def agent_name(self) -> str:
        return self._name

    async def check(self, request: Request | None) -> Verdict:
        if self._is_async:
            out = await self.fn(request)  # type: ignore[misc]
        elif self.interval is not None:
            out = await asyncio.to_thread(self.fn, request)
        else:
            out = self.fn(request)
        return self._as_verdict(out)

    def _as_verdict(self, out: Any) -> Verdict:
        if out is None:
            return Verdict(agent=self._name, confidence=0.0, state="no_opinion", neutral=True)
        if isinstance(out, Verdict):
            return out if out.agent == self._name else out.model_copy(update={"agent": self._name})
        if isinstance(out, Mapping):
            return Verdict.model_validate({"confidence": 1.0, **out, "agent": self._name})
        raise TypeError(
            f"agent {self._name!r} returned {type(out).__name__}: want a Verdict, dict or None"
        )


@overload
def agent(fn: AgentFunction, /) -> FunctionAgent: ...
@overload
def agent(
    *, name: str | None = None, interval: float | None = None, timeout_s: float = 0.05
) -> Callable[[AgentFunction], FunctionAgent]: ...
def agent(
    fn: AgentFunction | None = None,
    /,
    *,
    name: str | None = None,
    interval: float | None = None,
    timeout_s: float = 0.05,
) -> FunctionAgent | Callable[[AgentFunction], FunctionAgent]:
    """Make an agent of a function::

        @agent(name="office-hours")
        def office_hours(request):
            if not 9 <= datetime.now().hour < 18:
                return {"allowed": {"local"}, "reason": "after hours"}
            return None  # no opinion

    With `interval`, the function is sampled in the background (ambient) instead of per request.
    """

    def wrap(f: AgentFunction) -> FunctionAgent:
        return FunctionAgent(f, name=name, interval=interval, timeout_s=timeout_s)

    return wrap(fn) if fn is not None else wrap
