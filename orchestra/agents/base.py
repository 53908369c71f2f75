"""The Agent base class: one thing watched, one verdict returned."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from orchestra.agents.context import AgentContext
from orchestra.core.request import Request
from orchestra.core.verdict import Verdict


class Agent(ABC):
    """Watches one thing and returns a `Verdict` about where a request should go.

    An agent with an `interval` (seconds) is *ambient*: the runtime calls `check(None)` in a
    background task every `interval` and the request path reads the latest verdict from memory.
    An agent without one is *per-request*: `check(request)` runs on the request path, so it must
    be fast (microseconds, no network). Either way a check that raises or overruns `timeout_s` is
    recorded and ignored for that request, unless `fail_closed` is set: then it allows only LOCAL.
    """

    name: ClassVar[str] = ""
    interval: float | None = None
    timeout_s: float = 0.05
    # True for agents guarding something that must not leak (e.g. privacy): when the check raises
    # or overruns, the request is kept on the local tier instead of the agent being ignored.
    fail_closed: bool = False

    @abstractmethod
    async def check(self, request: Request | None) -> Verdict:
        """Judge `request` (None for an ambient sample) and return a verdict."""

    async def start(self, context: AgentContext) -> None:  # noqa: B027 - optional hook
        """Called once before the first check; `context` gives the catalog, budget and spend."""

    async def catalog_changed(self, context: AgentContext) -> None:  # noqa: B027 - optional hook
        """Called when models are added, changed or removed while running; `context.catalog`
        is the new catalog. An agent that keeps what it read from the catalog at `start`
        updates it here."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Called once at shutdown; release what `start` acquired."""

    @property
    def agent_name(self) -> str:
        return self.name or type(self).__name__

    def verdict(self, **fields: Any) -> Verdict:
        """Build a verdict signed with this agent's name."""
        return Verdict(agent=self.agent_name, **fields)
