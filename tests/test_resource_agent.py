"""The resource agent: real sampling, every state, hysteresis, monotonicity, model fit."""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestra import AgentContext, Budget, Catalog, ModelSpec, Request, Tier, Verdict
from orchestra.agents.panel import AgentPanel
from orchestra.agents.resource import STATES, GpuReading, Reading, ResourceAgent
from orchestra.spend.tracker import SpendTracker

IDLE = Reading(ram_available_mb=16_000)


def local(name: str, size_mb: float | None) -> ModelSpec:
    return ModelSpec(name=name, tier=Tier.LOCAL, litellm_model=f"ollama/{name}", size_mb=size_mb)


def context(*models: ModelSpec) -> AgentContext:
    return AgentContext(
        catalog=Catalog(models or [local("tiny", 100.0)]),
        budget=Budget(),
        spend=SpendTracker.seeded(0, 0),
    )


def started(*models: ModelSpec, **settings_: Any) -> ResourceAgent:
    """A started agent (sync, for hypothesis tests): knows the catalog's LOCAL models."""
    agent = ResourceAgent(**settings_)
    asyncio.run(agent.start(context(*models)))
    return agent


def favour_local(v: Verdict) -> float:
    """How much a verdict favours LOCAL: a disallow < any vote away < any vote for."""
    if Tier.LOCAL not in v.allowed:
        return -2.0
    return v.confidence if v.target is Tier.LOCAL else -v.confidence


def gpu(util: float, free_mb: float = 8_000) -> GpuReading:
    return GpuReading(name="test-gpu", util_percent=util, free_mb=free_mb, total_mb=16_000)


# -- real sampling -----------------------------------------------------------------------------


async def test_samples_the_real_machine() -> None:
    agent = ResourceAgent()
    await agent.start(context())
    try:
        first = await agent.check(None)
        verdict = await agent.check(None)
    finally:
        await agent.stop()
    m = verdict.metrics
    assert verdict.state in STATES and not verdict.neutral
    assert 0 <= m["cpu_percent"] <= 100 and 0 <= m["cpu_instant"] <= 100
    assert 0 <= m["cpu_self"] <= 100
    assert m["cores"] >= 1 and m["load_1m"] >= 0
    assert m["load_per_core"] == pytest.approx(m["load_1m"] / m["cores"], abs=0.01)
    assert 0 < m["ram_percent"] <= 100 and m["ram_available_mb"] > 0
    assert 0 <= m["swap_percent"] <= 100
    # This machine has no NVIDIA GPU: reported as none, never invented.
    if agent_has_no_gpu():
        assert m["gpu"] == "none"
    battery = m["battery"]
    assert battery == "none" or 0 <= battery["percent"] <= 100
    assert m["local_fit"] == ["tiny"]
    assert first.metrics.keys() == m.keys()


def agent_has_no_gpu() -> bool:
    from orchestra.agents.resource import _nvml_or_none, _nvml_shutdown

    nvml = _nvml_or_none()
    if nvml is not None:
        _nvml_shutdown(nvml)
    return nvml is None


async def test_check_without_start_still_samples() -> None:
    agent = ResourceAgent()
    verdict = await agent.check(None)
    assert verdict.metrics["local_fit"] == "no_local_models"
    await agent.stop()


async def test_stop_is_clean_and_idempotent() -> None:
    agent = ResourceAgent()
    await agent.start(context())
    await agent.check(None)
    await agent.stop()
    await agent.stop()
    assert agent._nvml is None


async def test_works_inside_the_agent_panel() -> None:
    samples: list[Verdict] = []
    enough = asyncio.Event()

    def record(v: Verdict) -> None:
        samples.append(v)
        if len(samples) >= 4:
            enough.set()

    agent = ResourceAgent(interval=0.05)
    panel = AgentPanel([agent], on_sample=record)
    await panel.start(context())
    try:
        await asyncio.wait_for(enough.wait(), timeout=30)
        (verdict,) = await panel.verdicts(Request.of("hi"))
    finally:
        await panel.stop()
    assert all(s.agent == "resource" and s.state in STATES and not s.neutral for s in samples)
    assert verdict.state in STATES and not verdict.neutral
    assert agent._nvml is None
    count = len(samples)
    await asyncio.sleep(0.15)  # stopped means stopped: no sample arrives after stop()
    assert len(samples) == count


# -- states ------------------------------------------------------------------------------------


def test_every_state() -> None:
    agent = started(local("tiny", 100.0))

    ok = agent.judge(replace(IDLE, cpu_percent=10, ram_percent=20))
    assert (ok.state, ok.target, ok.confidence) == ("ok", Tier.LOCAL, 0.3)

    busy = started().judge(replace(IDLE, cpu_percent=85))
    assert (busy.state, busy.target) == ("busy", Tier.EDGE)
    assert "CPU 85%" in busy.reason

    critical = started().judge(replace(IDLE, ram_percent=97))
    assert (critical.state, critical.target) == ("critical", Tier.EDGE)
    assert critical.confidence > busy.confidence

    starved = started(local("tiny", 100.0)).judge(replace(IDLE, ram_available_mb=50))
    assert starved.state == "no_memory" and starved.allowed == frozenset({Tier.EDGE, Tier.CLOUD})
    assert "120 MB" in starved.reason  # 100 MB x fit_factor 1.2

    battery = started().judge(replace(IDLE, battery_percent=10, power_plugged=False))
    assert (battery.state, battery.target) == ("on_battery", Tier.EDGE)
    assert battery.metrics["battery"] == {"percent": 10, "plugged": False}


def test_load_per_core_is_judged_against_the_core_count() -> None:
    # Load 3 is saturation on two cores and headroom on eight.
    assert started().judge(replace(IDLE, load_1m=3, cores=2)).state == "busy"
    assert started().judge(replace(IDLE, load_1m=5, cores=2)).state == "critical"
    calm = started().judge(replace(IDLE, load_1m=3, cores=8))
    assert calm.state == "ok" and calm.metrics["load_per_core"] == 0.38


def test_gpu_load_counts_only_when_a_gpu_exists() -> None:
    assert started().judge(IDLE).metrics["gpu"] == "none"
    hot = started().judge(replace(IDLE, gpus=(gpu(90),)))
    assert hot.state == "busy" and hot.metrics["gpu"][0]["util_percent"] == 90
    # Two GPUs: the idle one can still take a local model.
    assert started().judge(replace(IDLE, gpus=(gpu(99), gpu(5)))).state == "ok"


def test_battery_on_ac_or_charged_is_no_reason_to_leave() -> None:
    assert started().judge(replace(IDLE, battery_percent=5, power_plugged=True)).state == "ok"
    assert started().judge(replace(IDLE, battery_percent=60, power_plugged=False)).state == "ok"
    low = started().judge(replace(IDLE, battery_percent=2, power_plugged=False))
    lower = started().judge(replace(IDLE, battery_percent=15, power_plugged=False))
    assert low.confidence > lower.confidence  # the emptier, the firmer
    assert started().judge(IDLE).metrics["battery"] == "none"


def test_busy_machine_outranks_low_battery() -> None:
    v = started().judge(replace(IDLE, cpu_percent=90, battery_percent=5, power_plugged=False))
    assert v.state == "busy"


def test_cpu_is_smoothed_over_samples() -> None:
    agent = ResourceAgent(alpha=0.5)
    assert agent.smooth(replace(IDLE, cpu_percent=0)).cpu_percent == 0
    spike = agent.smooth(replace(IDLE, cpu_percent=100))
    assert (spike.cpu_percent, spike.cpu_instant) == (50, 100)
    assert agent.smooth(replace(IDLE, cpu_percent=100)).cpu_percent == 75
    # One spike does not make a busy machine; a sustained load does.
    assert agent.judge(spike).state == "ok"
    raw = ResourceAgent(alpha=1.0)
    raw.smooth(replace(IDLE, cpu_percent=0))
    assert raw.smooth(replace(IDLE, cpu_percent=100)).cpu_percent == 100


# -- model fit ---------------------------------------------------------------------------------


def test_model_fit_against_ram_and_vram() -> None:
    agent = started(local("small", 1_000), local("big", 4_000))
    some = agent.judge(replace(IDLE, ram_available_mb=2_000))
    assert some.state == "ok" and some.metrics["local_fit"] == ["small"]
    none = agent.judge(replace(IDLE, ram_available_mb=1_000))
    assert none.state == "no_memory" and none.metrics["local_fit"] == []
    assert Tier.LOCAL not in none.allowed
    # A GPU with free VRAM holds what RAM cannot.
    vram = started(local("big", 4_000)).judge(
        replace(IDLE, ram_available_mb=500, gpus=(gpu(10, free_mb=6_000),))
    )
    assert vram.state == "ok" and vram.metrics["local_fit"] == ["big"]


def test_unknown_sizes_are_not_judged() -> None:
    agent = started(local("huge", 100_000), local("mystery", None))
    v = agent.judge(replace(IDLE, ram_available_mb=10))
    assert v.state != "no_memory" and v.metrics["local_fit"] == "unknown"
    assert Tier.LOCAL in v.allowed


def test_no_local_models_is_not_no_memory() -> None:
    agent = started(ModelSpec(name="gpt", tier=Tier.CLOUD, litellm_model="openai/gpt"))
    v = agent.judge(replace(IDLE, ram_available_mb=1))
    assert v.state == "ok" and v.metrics["local_fit"] == "no_local_models"


def test_no_memory_has_hysteresis() -> None:
    agent = started(local("tiny", 1_000))  # needs 1200 MB; leaves no_memory at 1320 MB
    states = [
        agent.judge(replace(IDLE, ram_available_mb=mb)).state
        for mb in (1_199, 1_250, 1_300, 1_150, 1_310, 1_321)
    ]
    assert states == ["no_memory"] * 5 + ["ok"]


def test_battery_has_hysteresis() -> None:
    agent = started()
    states = [
        agent.judge(replace(IDLE, battery_percent=pct, power_plugged=False)).state
        for pct in (19, 22, 29, 18, 31)
    ]
    assert states == ["on_battery"] * 4 + ["ok"]
    agent.judge(replace(IDLE, battery_percent=19, power_plugged=False))
    plugged = agent.judge(replace(IDLE, battery_percent=19, power_plugged=True))
    assert plugged.state == "ok"  # AC power ends it at once


# -- properties --------------------------------------------------------------------------------

# (metric, threshold setting) -> a reading with that metric at `value`, the rest idle.
METRICS = {
    "cpu": lambda v: replace(IDLE, cpu_percent=v),
    "ram": lambda v: replace(IDLE, ram_percent=v),
    "load": lambda v: replace(IDLE, load_1m=v / 100, cores=1),  # in points: 100 = 1.0 per core
    "gpu": lambda v: replace(IDLE, gpus=(gpu(v),)),
}


@settings(max_examples=200, deadline=None)
@given(
    metric=st.sampled_from(sorted(METRICS)),
    level=st.sampled_from(["busy", "critical"]),
    margin=st.sampled_from([4.0, 10.0]),
    offsets=st.lists(st.floats(-0.5, 0.5), min_size=1, max_size=40),
)
def test_hysteresis_holds_around_every_threshold(
    metric: str, level: str, margin: float, offsets: list[float]
) -> None:
    agent = ResourceAgent(margin=margin)
    threshold = getattr(agent, f"{metric}_{level}") * (100 if metric == "load" else 1)
    states = [agent.judge(METRICS[metric](threshold + o * margin)).state for o in offsets]
    flips = sum(a != b for a, b in pairwise(states))
    assert flips <= 1  # entered at most once, never left while within +-margin/2
    entered = next((i for i, o in enumerate(offsets) if o >= 0), None)
    if entered is not None:
        assert set(states[entered:]) == {level}


pct = st.floats(0, 100)


@st.composite
def dominated_pairs(draw: st.DrawFn) -> tuple[Reading, Reading]:
    """(a, b) where b is at least as loaded as a in every load metric."""

    def more(x: float, hi: float = 100.0) -> float:
        return min(hi, x + draw(st.floats(0, hi)))

    cpu, ram, load, avail = draw(pct), draw(pct), draw(st.floats(0, 8)), draw(st.floats(0, 9e3))
    a = Reading(cpu_percent=cpu, ram_percent=ram, load_1m=load, cores=2, ram_available_mb=avail)
    b = replace(
        a,
        cpu_percent=more(cpu),
        ram_percent=more(ram),
        load_1m=more(load, 8.0),
        ram_available_mb=avail - draw(st.floats(0, avail)),
    )
    if draw(st.booleans()):
        util, free = draw(pct), draw(st.floats(0, 9e3))
        a = replace(a, gpus=(gpu(util, free),))
        b = replace(b, gpus=(gpu(more(util), free - draw(st.floats(0, free))),))
    if draw(st.booleans()):
        charge, plugged = draw(pct), draw(st.booleans())
        a = replace(a, battery_percent=charge, power_plugged=plugged)
        b_plugged = plugged and draw(st.booleans())  # unplugged is the more loaded side
        b = replace(b, battery_percent=charge - draw(st.floats(0, charge)), power_plugged=b_plugged)
    return a, b


@settings(max_examples=300, deadline=None)
@given(pair=dominated_pairs(), history=st.lists(dominated_pairs(), max_size=4))
def test_more_load_never_favours_local_more(
    pair: tuple[Reading, Reading], history: list[tuple[Reading, Reading]]
) -> None:
    lighter, heavier = (started(local("s", 1_000), local("m", 3_000)) for _ in range(2))
    for earlier, _ in history:  # same hysteresis state on both sides
        lighter.judge(earlier)
        heavier.judge(earlier)
    a, b = pair
    assert favour_local(heavier.judge(b)) <= favour_local(lighter.judge(a))


@settings(max_examples=200, deadline=None)
@given(sequence=st.lists(dominated_pairs(), min_size=1, max_size=12))
def test_never_disallows_every_tier(sequence: list[tuple[Reading, Reading]]) -> None:
    agent = started(local("s", 1_000), local("m", 3_000))
    for a, b in sequence:
        for reading in (a, b):
            v = agent.judge(reading)
            assert {Tier.EDGE, Tier.CLOUD} <= v.allowed
            assert v.state in STATES and 0.0 <= v.confidence <= 1.0


# -- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings_", "fragment"),
    [
        ({"interval": 0}, "interval"),
        ({"interval": -1.0}, "interval"),
        ({"interval": "fast"}, "interval"),
        ({"alpha": 0}, "alpha"),
        ({"alpha": 1.5}, "alpha"),
        ({"cpu_busy": 90, "cpu_critical": 80}, "cpu_critical"),
        ({"ram_busy": 120}, "ram_busy"),
        ({"gpu_critical": math.nan}, "gpu_critical"),
        ({"load_busy": 3.0}, "load_critical"),
        ({"load_busy": True}, "load_busy"),
        ({"margin": -1}, "margin"),
        ({"margin": 85}, "margin"),
        ({"battery_low": 150}, "battery_low"),
        ({"fit_factor": 0.5}, "fit_factor"),
        ({"exclude_self": "yes"}, "exclude_self"),
        ({"timeout_s": 0}, "timeout_s"),
    ],
)
def test_invalid_settings_raise(settings_: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        ResourceAgent(**settings_)


def test_settings_are_plain_keywords_with_defaults() -> None:
    agent = ResourceAgent(interval=0.5, cpu_busy=70, load_critical=3)
    assert (agent.interval, agent.cpu_busy, agent.load_critical) == (0.5, 70.0, 3.0)
    assert ResourceAgent().interval == 2.0
    with pytest.raises(TypeError):
        ResourceAgent(0.5)  # type: ignore[misc]
