"""The built-in agents: their verdict logic (pure) and their real sensors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents import ComplexityAgent, ConnectivityAgent, CostAgent, ResourceAgent
from agents.connectivity import Probe, ProbeResult, probe_for
from orchestra import ALL_TIERS, AgentContext, Budget, Catalog, ModelSpec, Tier
from orchestra.spend import SpendTracker
from orchestra.testing import StubProvider, refused_url


def spec(name: str, tier: Tier, free: bool = False, api_base: str | None = None) -> ModelSpec:
    price = 0.0 if free else 1.0
    return ModelSpec(
        name=name,
        tier=tier,
        litellm_model=f"openai/{name}",
        api_base=api_base,
        input_cost_per_mtok=price,
        output_cost_per_mtok=price,
        size_mb=100.0 if tier is Tier.LOCAL else None,
    )


def context(*models: ModelSpec, budget: Budget | None = None, spend: float = 0.0) -> AgentContext:
    return AgentContext(
        catalog=Catalog(models),
        budget=budget or Budget(),
        spend=SpendTracker.seeded(spend, spend),
    )


# -- resource ----------------------------------------------------------------------------------


async def test_resource_samples_the_real_machine() -> None:
    agent = ResourceAgent()
    await agent.start(context(spec("tiny", Tier.LOCAL, free=True)))
    verdict = await agent.check(None)
    await agent.stop()
    assert 0 <= verdict.metrics["cpu_percent"] <= 100
    assert verdict.metrics["ram_available_mb"] > 0
    assert verdict.metrics["gpu"] == "none" or isinstance(verdict.metrics["gpu"], list)
    assert verdict.state in {"ok", "busy", "critical", "no_memory"}


async def test_resource_states() -> None:
    agent = ResourceAgent()
    await agent.start(context(spec("tiny", Tier.LOCAL, free=True)))
    assert agent.judge(cpu=10, ram=20, avail_mb=8000).target is Tier.LOCAL
    busy = agent.judge(cpu=85, ram=20, avail_mb=8000)
    assert (busy.state, busy.target) == ("busy", Tier.EDGE)
    assert agent.judge(cpu=99, ram=20, avail_mb=8000).state == "critical"
    starved = agent.judge(cpu=10, ram=99, avail_mb=50)
    assert starved.state == "no_memory" and Tier.LOCAL not in starved.allowed
    await agent.stop()


@given(st.floats(0, 100), st.floats(0, 100), st.floats(0, 100))
def test_resource_confidence_away_from_local_grows_with_cpu(ram: float, a: float, b: float) -> None:
    agent = ResourceAgent()
    low, high = sorted((a, b))

    def away(cpu: float) -> float:
        v = agent.judge(cpu=cpu, ram=ram, avail_mb=10_000)
        return v.confidence if v.target is not Tier.LOCAL else 0.0

    assert away(low) <= away(high)


# -- connectivity ------------------------------------------------------------------------------


def test_probe_targets() -> None:
    assert probe_for(spec("x", Tier.EDGE, api_base="http://10.0.0.5:8080/v1")) == Probe(
        "10.0.0.5", 8080, Tier.EDGE
    )
    cloud = ModelSpec(name="g", tier=Tier.CLOUD, litellm_model="openai/gpt-4o-mini")
    assert probe_for(cloud) == Probe("api.openai.com", 443, Tier.CLOUD)
    odd = ModelSpec(name="o", tier=Tier.CLOUD, litellm_model="somewhere/model")
    assert probe_for(odd) is None


async def test_connectivity_probes_real_sockets(stub: StubProvider) -> None:
    agent = ConnectivityAgent(probe_timeout_s=0.5)
    await agent.start(
        context(
            spec("lan", Tier.EDGE, api_base=stub.url),
            spec("cloud", Tier.CLOUD, api_base=refused_url()),
        )
    )
    verdict = await agent.check(None)
    assert verdict.state == "degraded"
    assert verdict.allowed == frozenset({Tier.LOCAL, Tier.EDGE})
    assert "cloud unreachable" in verdict.reason

    stub.stop()  # the LAN box goes away too: offline
    offline = await agent.check(None)
    assert offline.state == "offline" and offline.allowed == frozenset({Tier.LOCAL})


async def test_connectivity_with_nothing_remote_abstains() -> None:
    agent = ConnectivityAgent()
    await agent.start(context(spec("tiny", Tier.LOCAL, free=True)))
    verdict = await agent.check(None)
    assert verdict.state == "local_only" and verdict.allowed == ALL_TIERS and verdict.target is None


def test_connectivity_all_up_allows_everything() -> None:
    agent = ConnectivityAgent()
    up = [ProbeResult(Probe("h", 1, Tier.CLOUD), True, 3.0)]
    assert agent.judge(up).allowed == ALL_TIERS


# -- cost --------------------------------------------------------------------------------------


async def test_cost_states_follow_the_budget() -> None:
    agent = CostAgent()
    models = (spec("tiny", Tier.LOCAL, free=True), spec("paid", Tier.CLOUD))
    await agent.start(context(*models, budget=Budget(daily_usd=1.0, monthly_usd=10.0)))
    assert agent.judge(0.1, 0.1).state == "ok"
    alert = agent.judge(0.85, 0.85)
    assert (alert.state, alert.target) == ("alert", Tier.LOCAL)
    over = agent.judge(1.2, 1.2)
    assert over.state == "over_budget" and Tier.CLOUD not in over.allowed
    assert Tier.LOCAL in over.allowed
    monthly = agent.judge(0.0, 10.5)
    assert monthly.state == "over_budget" and "month" in monthly.reason


async def test_cost_reads_live_spend() -> None:
    agent = CostAgent()
    ctx = context(spec("paid", Tier.CLOUD), budget=Budget(daily_usd=1.0))
    await agent.start(ctx)
    assert (await agent.check(None)).state == "ok"
    ctx.spend.add(2.0)
    assert (await agent.check(None)).state == "over_budget"


async def test_cost_without_budget_abstains() -> None:
    agent = CostAgent()
    await agent.start(context(spec("paid", Tier.CLOUD)))
    verdict = await agent.check(None)
    assert verdict.state == "no_budget" and verdict.target is None and verdict.allowed == ALL_TIERS


# -- complexity --------------------------------------------------------------------------------


def test_complexity_maps_scores_to_tiers() -> None:
    agent = ComplexityAgent(edge_from=0.4, cloud_from=0.7)
    assert agent.judge(0.1).target is Tier.LOCAL
    assert agent.judge(0.5).target is Tier.EDGE
    assert agent.judge(0.9).target is Tier.CLOUD
    assert agent.judge(0.95).confidence > agent.judge(0.72).confidence


async def test_complexity_with_a_custom_scorer() -> None:
    from orchestra import Request

    agent = ComplexityAgent(scorer=lambda prompt: 1.0 if "prove" in prompt else 0.0)
    hard = await agent.check(Request.of("prove it"))
    easy = await agent.check(Request.of("hi"))
    assert (hard.target, easy.target) == (Tier.CLOUD, Tier.LOCAL)
    assert hard.metrics["score"] == 1.0


async def test_complexity_default_scorer_reports_its_signals() -> None:
    from orchestra import Request

    agent = ComplexityAgent()
    verdict = await agent.check(Request.of("Solve 3x + 5 = 20 and explain each step."))
    assert 0.0 <= verdict.metrics["score"] <= 1.0
    assert verdict.metrics["signals"]


def test_complexity_rejects_bad_thresholds() -> None:
    with pytest.raises(ValueError):
        ComplexityAgent(edge_from=0.8, cloud_from=0.2)
