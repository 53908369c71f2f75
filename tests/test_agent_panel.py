"""The agent panel: per-request agents under a time budget, ambient agents in the background."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator, Callable

import pytest

from orchestra import Agent, AgentContext, Budget, Catalog, Request, Tier, Verdict
from orchestra.agents.panel import AgentPanel
from orchestra.spend.tracker import SpendTracker


@pytest.fixture
def context() -> AgentContext:
    return AgentContext(catalog=Catalog([]), budget=Budget(), spend=SpendTracker.seeded(0, 0))


@pytest.fixture
async def panels() -> AsyncIterator[list[AgentPanel]]:
    """Panels registered here are stopped after the test, even when it fails."""
    made: list[AgentPanel] = []
    yield made
    for panel in made:
        await panel.stop()


def request() -> Request:
    return Request.of("What is the capital of France?")


async def wait_until(predicate: Callable[[], bool], limit_s: float = 0.5) -> bool:
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


# -- agents used by the tests -----------------------------------------------------------------


class Steady(Agent):
    name = "steady"

    def __init__(self, name: str = "steady") -> None:
        self.name = name  # type: ignore[misc]
        self.started_with: AgentContext | None = None
        self.stopped = False
        self.seen: list[Request | None] = []

    async def start(self, context: AgentContext) -> None:
        self.started_with = context

    async def stop(self) -> None:
        self.stopped = True

    async def check(self, request: Request | None) -> Verdict:
        self.seen.append(request)
        return self.verdict(target=Tier.EDGE, confidence=0.7, state="fine", reason="all good")


class Raising(Agent):
    name = "raiser"

    async def check(self, request: Request | None) -> Verdict:
        raise RuntimeError("sensor on fire")


class SlowAsync(Agent):
    name = "slow"
    timeout_s = 0.05

    async def check(self, request: Request | None) -> Verdict:
        await asyncio.sleep(5)
        return self.verdict(target=Tier.CLOUD)


class BusyLoop(Agent):
    """Never yields to the event loop: it cannot be interrupted, only ignored afterwards."""

    name = "busy"
    timeout_s = 0.01

    async def check(self, request: Request | None) -> Verdict:
        end = time.perf_counter() + 0.05
        while time.perf_counter() < end:
            pass
        return self.verdict(target=Tier.CLOUD, confidence=1.0)


class CollectedMidway(Agent):
    """A quick fail-closed check that a full garbage collection interrupts (as one falls due
    wherever the allocation that tips it happens); the heap makes that pause outlast the budget."""

    name = "collected"
    timeout_s = 0.005
    fail_closed = True

    def __init__(self) -> None:
        self.heap = [[i] for i in range(400_000)]
        self.paused_s = 0.0

    async def check(self, request: Request | None) -> Verdict:
        started = time.perf_counter()
        gc.collect()
        self.paused_s = time.perf_counter() - started
        return self.verdict(target=Tier.CLOUD, confidence=1.0)


class WrongType(Agent):
    name = "wrong"

    async def check(self, request: Request | None) -> Verdict:
        return "cloud"  # type: ignore[return-value]


class Impostor(Agent):
    name = "impostor"

    async def check(self, request: Request | None) -> Verdict:
        return Verdict(agent="someone-else", target=Tier.LOCAL)


class Ticker(Agent):
    """An ambient agent counting its samples."""

    name = "ticker"
    interval = 0.02
    timeout_s = 0.5

    def __init__(self) -> None:
        self.count = 0
        self.seen: list[Request | None] = []
        self.stopped = False

    async def check(self, request: Request | None) -> Verdict:
        self.count += 1
        self.seen.append(request)
        return self.verdict(target=Tier.LOCAL, state="ok", metrics={"n": self.count})

    async def stop(self) -> None:
        self.stopped = True


class StuckAfterFirst(Agent):
    """Answers once, then every later sample hangs (within a generous time budget)."""

    name = "stuck"
    interval = 0.02
    timeout_s = 5.0

    def __init__(self) -> None:
        self.calls = 0

    async def check(self, request: Request | None) -> Verdict:
        self.calls += 1
        if self.calls > 1:
            await asyncio.Event().wait()
        return self.verdict(target=Tier.EDGE, confidence=0.8, state="measured")


class SlowFirstSample(Agent):
    name = "sleepy"
    interval = 0.02
    timeout_s = 1.0

    async def check(self, request: Request | None) -> Verdict:
        await asyncio.sleep(0.3)
        return self.verdict(target=Tier.CLOUD)


# -- per-request agents -----------------------------------------------------------------------


async def test_raising_agent_becomes_neutral_error(context: AgentContext) -> None:
    panel = AgentPanel([Raising(), Steady()])
    await panel.start(context)
    raised, steady = await panel.verdicts(request())
    assert raised.agent == "raiser"
    assert raised.state == "error" and raised.neutral
    assert "RuntimeError" in raised.reason and "sensor on fire" in raised.reason
    assert raised.target is None and raised.confidence == 0.0
    assert steady.state == "fine" and steady.target is Tier.EDGE
    await panel.stop()


async def test_slow_async_agent_times_out_within_budget(context: AgentContext) -> None:
    panel = AgentPanel([SlowAsync()])
    await panel.start(context)
    started = time.perf_counter()
    (verdict,) = await panel.verdicts(request())
    elapsed = time.perf_counter() - started
    assert verdict.state == "timeout" and verdict.neutral
    assert "0.05" in verdict.reason
    assert elapsed < 0.5, f"verdicts() took {elapsed:.3f}s for a 0.05s budget"
    await panel.stop()


async def test_busy_loop_agent_overrun_is_ignored(context: AgentContext) -> None:
    panel = AgentPanel([BusyLoop()])
    await panel.start(context)
    (verdict,) = await panel.verdicts(request())
    assert verdict.state == "timeout" and verdict.neutral
    assert verdict.target is None
    assert "ms" in verdict.reason
    await panel.stop()


async def test_a_garbage_collection_is_not_charged_to_the_check_it_paused(
    context: AgentContext,
) -> None:
    """A collection pausing a privacy scan under load must not make it "overrun" and keep every
    request local: the check's own time is within budget, so its verdict stands."""
    agent = CollectedMidway()
    panel = AgentPanel([agent, BusyLoop()])
    await panel.start(context)
    collected, busy = await panel.verdicts(request())
    assert agent.paused_s > agent.timeout_s  # the pause did outlast the budget
    assert collected.state == "ok" and collected.target is Tier.CLOUD, collected.reason
    assert busy.state == "timeout"  # a check's own work is still timed
    await panel.stop()


async def test_non_verdict_is_an_error(context: AgentContext) -> None:
    panel = AgentPanel([WrongType()])
    await panel.start(context)
    (verdict,) = await panel.verdicts(request())
    assert verdict.state == "error" and verdict.neutral
    assert "str" in verdict.reason and "not a Verdict" in verdict.reason
    await panel.stop()


async def test_verdict_is_signed_with_the_agent_name(context: AgentContext) -> None:
    panel = AgentPanel([Impostor()])
    await panel.start(context)
    (verdict,) = await panel.verdicts(request())
    assert verdict.agent == "impostor" and verdict.target is Tier.LOCAL
    await panel.stop()


async def test_per_request_agent_sees_the_request_and_its_context(
    context: AgentContext,
) -> None:
    agent = Steady()
    panel = AgentPanel([agent])
    await panel.start(context)
    req = request()
    await panel.verdicts(req)
    assert agent.seen == [req]
    assert agent.started_with is context
    assert panel.latest() == {}  # per-request agents keep no sample
    await panel.stop()


# -- ambient agents ---------------------------------------------------------------------------


async def test_ambient_agent_sampled_in_background(
    context: AgentContext, panels: list[AgentPanel]
) -> None:
    ticker = Ticker()
    panel = AgentPanel([ticker])
    panels.append(panel)
    await panel.start(context)
    assert ticker.count >= 1, "start() takes a first sample"
    first = ticker.count
    assert await wait_until(lambda: ticker.count >= first + 2)
    assert set(ticker.seen) == {None}, "ambient checks get no request"


async def test_verdicts_reads_ambient_sample_from_memory(
    context: AgentContext, panels: list[AgentPanel]
) -> None:
    ticker = Ticker()
    panel = AgentPanel([ticker])
    panels.append(panel)
    await panel.start(context)
    req = request()
    before = ticker.count
    (verdict,) = await panel.verdicts(req)
    assert ticker.count == before, "verdicts() must not call check() of an ambient agent"
    assert req not in ticker.seen
    assert verdict.metrics == {"n": before}
    assert verdict == panel.latest()["ticker"]
    assert not verdict.stale


async def test_old_ambient_verdict_is_stale(
    context: AgentContext, panels: list[AgentPanel]
) -> None:
    agent = StuckAfterFirst()
    panel = AgentPanel([agent])
    panels.append(panel)
    await panel.start(context)
    (fresh,) = await panel.verdicts(request())
    assert fresh.state == "measured" and not fresh.stale
    await asyncio.sleep(0.1)  # > 3 intervals of 0.02 s
    (old,) = await panel.verdicts(request())
    assert old.stale
    assert old.state == "measured" and old.target is Tier.EDGE
    assert agent.calls >= 2, "a later sample is still in flight"


async def test_ambient_verdict_with_old_timestamp_is_stale(
    context: AgentContext, panels: list[AgentPanel]
) -> None:
    class Historian(Agent):
        name = "historian"
        interval = 0.02

        async def check(self, request: Request | None) -> Verdict:
            return self.verdict(target=Tier.CLOUD, at=time.time() - 1.0)

    panel = AgentPanel([Historian()])
    panels.append(panel)
    await panel.start(context)
    (verdict,) = await panel.verdicts(request())
    assert verdict.stale


async def test_ambient_agent_without_sample_is_pending(
    context: AgentContext, panels: list[AgentPanel]
) -> None:
    panel = AgentPanel([SlowFirstSample()])
    panels.append(panel)
    (before_start,) = await panel.verdicts(request())
    assert before_start.state == "pending" and before_start.neutral
    started = time.perf_counter()
    await panel.start(context, first_sample_s=0.02)
    assert time.perf_counter() - started < 0.2, "start() waits at most first_sample_s"
    (verdict,) = await panel.verdicts(request())
    assert verdict.state == "pending" and verdict.neutral and not verdict.stale
    assert verdict.target is None


async def test_hook_after_start_joins_next_verdicts(
    context: AgentContext, panels: list[AgentPanel]
) -> None:
    panel = AgentPanel([Steady("first")])
    panels.append(panel)
    await panel.start(context)
    late, ticker = Steady("late"), Ticker()
    panel.hook(late)
    panel.hook(ticker)
    verdicts = await panel.verdicts(request())
    assert [v.agent for v in verdicts] == ["first", "late", "ticker"]
    assert late.started_with is context
    assert verdicts[2].state == "ok", "a late ambient agent has sampled before it is read"
    assert await wait_until(lambda: ticker.count >= 3), "and is then sampled in background"


def test_duplicate_names_rejected() -> None:
    with pytest.raises(ValueError, match="'twin'"):
        AgentPanel([Steady("twin"), Steady("twin")])
    panel = AgentPanel([Steady("twin")])
    with pytest.raises(ValueError, match="already hooked"):
        panel.hook(Steady("twin"))
    assert [a.agent_name for a in panel.agents] == ["twin"]


async def test_stop_cancels_sampling_and_stops_agents(context: AgentContext) -> None:
    class BadStop(Steady):
        async def stop(self) -> None:
            raise RuntimeError("will not stop")

    ticker, steady = Ticker(), Steady()
    panel = AgentPanel([BadStop("bad"), ticker, steady])
    await panel.start(context)
    assert await wait_until(lambda: ticker.count >= 2)
    await panel.stop()
    assert ticker.stopped and steady.stopped, "a failing stop() does not skip the others"
    count = ticker.count
    await asyncio.sleep(0.08)
    assert ticker.count == count, "no sampling after stop()"


async def test_on_sample_receives_samples(context: AgentContext, panels: list[AgentPanel]) -> None:
    samples: list[Verdict] = []
    ticker = Ticker()
    panel = AgentPanel([ticker, Steady()], on_sample=samples.append)
    panels.append(panel)
    await panel.start(context)
    assert len(samples) >= 1
    assert await wait_until(lambda: len(samples) >= 3)
    assert {v.agent for v in samples} == {"ticker"}, "per-request agents are not samples"
    numbers = [v.metrics["n"] for v in samples]
    assert numbers == sorted(numbers) and numbers[0] == 1


async def test_ambient_failure_is_a_neutral_sample(
    context: AgentContext, panels: list[AgentPanel]
) -> None:
    class FailingAmbient(Raising):
        name = "flaky"
        interval = 0.02

    samples: list[Verdict] = []
    panel = AgentPanel([FailingAmbient()], on_sample=samples.append)
    panels.append(panel)
    await panel.start(context)
    (verdict,) = await panel.verdicts(request())
    assert verdict.state == "error" and verdict.neutral
    assert samples and samples[0].state == "error"


async def test_raising_on_sample_does_not_stop_sampling(context: AgentContext) -> None:
    calls: list[Verdict] = []

    def on_sample(verdict: Verdict) -> None:
        calls.append(verdict)
        if len(calls) >= 2:
            raise RuntimeError("store unavailable")

    ticker = Ticker()
    panel = AgentPanel([ticker], on_sample=on_sample)
    await panel.start(context)
    try:
        assert await wait_until(lambda: ticker.count >= 2)
        assert await wait_until(lambda: ticker.count >= 5, limit_s=0.2)
    finally:
        with contextlib.suppress(RuntimeError):
            await panel.stop()
    await panel.stop()
    assert ticker.stopped
