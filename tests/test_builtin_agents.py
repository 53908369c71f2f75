"""The built-in agents: their verdict logic (pure) and their real sensors."""

from __future__ import annotations

import pytest

from orchestra import AgentContext, Budget, Catalog, ModelSpec, Tier
from orchestra.agents.complexity.agent import ComplexityAgent
from orchestra.spend.tracker import SpendTracker


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
