"""Runs the agents: ambient ones in background tasks, per-request ones on the request path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable

from orchestra.agents.base import Agent
from orchestra.agents.context import AgentContext
from orchestra.agents.eager import within
from orchestra.core import gc_time
from orchestra.core.request import Request
from orchestra.core.tier import Tier
from orchestra.core.verdict import STATE_ERROR, STATE_PENDING, STATE_TIMEOUT, Verdict

log = logging.getLogger("orchestra.agents")

# An ambient verdict older than this many intervals is marked stale.
STALE_AFTER_INTERVALS = 3.0
FIRST_SAMPLE_S = 1.5
FIRST_SAMPLE_CAP_S = 5.0


class AgentPanel:
    """Owns the agents of one runtime and produces their verdicts for each request.

    Ambient agents are sampled every `interval` in their own task; `verdicts()` reads their latest
    sample from memory. Per-request agents are awaited in turn under their `timeout_s`. An agent
    that raises or overruns becomes a neutral verdict (state `error` / `timeout`), never an error
    for the request; a garbage collection that paused it is not counted as its time (see
    `orchestra.core.gc_time`). `on_sample` receives every ambient sample (the store records them).
    """

    def __init__(
        self,
        agents: Iterable[Agent] = (),
        *,
        on_sample: Callable[[Verdict], None] | None = None,
    ) -> None:
        self._agents: list[Agent] = []
        self._latest: dict[str, Verdict] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._on_sample = on_sample
        self._context: AgentContext | None = None
        self._starting: list[asyncio.Task[None]] = []
        gc_time.watch()
        for agent in agents:
            self._add(agent)

    @property
    def agents(self) -> tuple[Agent, ...]:
        return tuple(self._agents)

    @property
    def ambient(self) -> frozenset[str]:
        """Names of the agents sampled in the background (their verdicts recur across requests)."""
        return frozenset(a.agent_name for a in self._agents if a.interval is not None)

    def _add(self, agent: Agent) -> None:
        name = agent.agent_name
        if agent.interval is not None and not agent.interval > 0:
            raise ValueError(f"agent {name!r}: interval must be > 0 seconds, got {agent.interval}")
        if any(a.agent_name == name for a in self._agents):
            raise ValueError(f"an agent named {name!r} is already hooked")
        self._agents.append(agent)
        if agent.interval is not None:
            # Until its first sample a fail-closed agent binds as if it had failed.
            self._latest[name] = _failed(agent, STATE_PENDING, "no sample yet")

    async def start(self, context: AgentContext, first_sample_s: float | None = None) -> None:
        """Start every agent, take a first ambient sample (bounded), then sample in background.

        The first sample waits at most `first_sample_s`; by default the slowest ambient agent's
        `timeout_s` (at least 1.5 s, at most 5 s).
        """
        self._context = context
        await asyncio.gather(*(self._start_agent(a) for a in self._agents))
        await self._first_samples(self._agents, first_sample_s)
        for agent in self._agents:
            self._spawn_sampler(agent)

    def hook(self, agent: Agent) -> None:
        """Add an agent; if the panel is running it starts now and joins the next request."""
        self._add(agent)
        if self._context is not None:
            self._starting.append(asyncio.create_task(self._start_late(agent)))

    async def _start_late(self, agent: Agent) -> None:
        await self._start_agent(agent)
        await self._first_samples([agent], agent.timeout_s)
        self._spawn_sampler(agent)

    async def catalog_changed(self, context: AgentContext) -> None:
        """Tell every agent the catalog changed (an agent that fails to follow is logged)."""
        self._context = context
        for agent in self._agents:
            try:
                await agent.catalog_changed(context)
            except Exception as exc:
                log.warning("agent %s failed to follow the catalog: %r", agent.agent_name, exc)

    async def stop(self) -> None:
        tasks = [*self._tasks.values(), *self._starting]
        self._starting = []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for agent in self._agents:
            try:
                await agent.stop()
            except Exception:
                log.exception("agent %s failed to stop", agent.agent_name)
        self._context = None

    async def verdicts(self, request: Request) -> tuple[Verdict, ...]:
        """Every agent's verdict for `request`, in hook order."""
        if self._starting:
            starting, self._starting = self._starting, []
            await asyncio.gather(*starting)
        now = time.time()
        out: list[Verdict] = []
        for agent in self._agents:
            if agent.interval is not None:
                out.append(self._fresh(agent, now))
            else:
                out.append(await self._checked(agent, request))
        return tuple(out)

    def latest(self) -> dict[str, Verdict]:
        """The latest ambient samples, by agent name."""
        return dict(self._latest)

    async def _start_agent(self, agent: Agent) -> None:
        assert self._context is not None
        try:
            await agent.start(self._context)
        except Exception as exc:
            log.warning("agent %s failed to start: %r", agent.agent_name, exc)

    async def _first_samples(self, agents: Iterable[Agent], deadline_s: float | None) -> None:
        ambient = [a for a in agents if a.interval is not None]
        if not ambient:
            return
        if deadline_s is None:
            # The slowest agent gets its own budget (a probe deadline may exceed 1.5 s), but
            # start-up is never held long: an agent still sampling stays "pending" till it is done.
            slowest = max(a.timeout_s for a in ambient)
            deadline_s = min(FIRST_SAMPLE_CAP_S, max(FIRST_SAMPLE_S, slowest))
        tasks = [asyncio.ensure_future(self._sample(a)) for a in ambient]
        _, pending = await asyncio.wait(tasks, timeout=deadline_s)
        for task in pending:
            task.cancel()

    def _spawn_sampler(self, agent: Agent) -> None:
        if agent.interval is not None:
            name = agent.agent_name
            self._tasks[name] = asyncio.create_task(self._sample_forever(agent), name=name)

    async def _sample_forever(self, agent: Agent) -> None:
        assert agent.interval is not None
        while True:
            await asyncio.sleep(agent.interval)
            await self._sample(agent)

    async def _sample(self, agent: Agent) -> None:
        # Staleness is judged from the verdict's own `at`: an agent reporting an old measurement
        # (a cached reading) is stale even when it answered just now.
        verdict = await self._checked(agent, None)
        self._latest[agent.agent_name] = verdict
        if self._on_sample is not None:
            try:
                self._on_sample(verdict)
            except Exception:  # recording a sample must never stop the sampling
                log.exception("recording a sample of agent %s failed", agent.agent_name)

    async def _checked(self, agent: Agent, request: Request | None) -> Verdict:
        name = agent.agent_name
        started, collecting = time.perf_counter(), gc_time.spent()
        try:
            verdict = await within(agent.check(request), agent.timeout_s)
        except TimeoutError:
            return _failed(agent, STATE_TIMEOUT, f"overran its {agent.timeout_s}s budget")
        except Exception as exc:
            log.warning("agent %s raised %s: %s", name, type(exc).__name__, exc)
            return _failed(agent, STATE_ERROR, f"raised {type(exc).__name__}: {exc}")
        elapsed = time.perf_counter() - started - (gc_time.spent() - collecting)
        if elapsed > agent.timeout_s:
            # A synchronous agent cannot be interrupted; its late answer is still ignored.
            took = f"took {elapsed * 1000:.1f} ms, over its {agent.timeout_s}s budget"
            return _failed(agent, STATE_TIMEOUT, took)
        if not isinstance(verdict, Verdict):
            return _failed(agent, STATE_ERROR, f"returned {type(verdict).__name__}, not a Verdict")
        if verdict.agent != name:
            verdict = verdict.model_copy(update={"agent": name})
        return verdict

    def _fresh(self, agent: Agent, now: float) -> Verdict:
        verdict = self._latest[agent.agent_name]
        assert agent.interval is not None
        if not verdict.neutral and now - verdict.at > STALE_AFTER_INTERVALS * agent.interval:
            return verdict.model_copy(update={"stale": True})
        return verdict


def _failed(agent: Agent, state: str, reason: str) -> Verdict:
    """The verdict of an agent that could not answer: ignored, or local-only if it fails closed."""
    if not agent.fail_closed:
        return Verdict.neutral_for(agent.agent_name, state, reason)
    return Verdict(
        agent=agent.agent_name,
        target=Tier.LOCAL,
        allowed=frozenset({Tier.LOCAL}),
        confidence=1.0,
        state=state,
        reason=f"{reason}; failing closed: local only",
    )
