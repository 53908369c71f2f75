"""The cost agent and the budget guard: estimates, denials, alerts, and no overspend under load."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import model_toml
from hypothesis import given
from hypothesis import strategies as st

from orchestra import (
    ALL_TIERS,
    AgentContext,
    AllCandidatesFailed,
    Budget,
    Catalog,
    ModelSpec,
    Orchestra,
    Request,
    Tier,
)
from orchestra.agents.cost import CostAgent
from orchestra.core.request import as_sent
from orchestra.spend.estimate import completion_tokens, cost_usd, messages_tokens
from orchestra.spend.tracker import SpendTracker
from orchestra.testing import Behaviour, StubProvider


def spec(name: str, tier: Tier, price: float) -> ModelSpec:
    return ModelSpec(
        name=name, tier=tier, litellm_model=f"openai/{name}",
        input_cost_per_mtok=price, output_cost_per_mtok=price,
    )  # fmt: skip


CATALOG = (
    spec("tiny", Tier.LOCAL, 0.0),
    spec("cheap", Tier.CLOUD, 1.0),
    spec("pricey", Tier.CLOUD, 100.0),
)


async def agent_with(budget: Budget, spent: float = 0.0, *models: ModelSpec) -> CostAgent:
    agent = CostAgent()
    ctx = AgentContext(
        catalog=Catalog(models or CATALOG), budget=budget, spend=SpendTracker.seeded(spent, spent)
    )
    await agent.start(ctx)
    return agent


async def test_states_follow_the_budget() -> None:
    agent = await agent_with(Budget(daily_usd=1.0, monthly_usd=10.0))
    assert agent.judge(today=0.1, month=0.1).state == "ok"
    alert = agent.judge(today=0.85, month=0.85)
    assert (alert.state, alert.target) == ("alert", Tier.LOCAL)
    over = agent.judge(today=1.2, month=1.2)
    assert over.state == "over_budget" and over.allowed == frozenset({Tier.LOCAL, Tier.EDGE})
    monthly = agent.judge(today=0.0, month=10.5)
    assert monthly.state == "over_budget"


async def test_no_budget_abstains() -> None:
    verdict = await (await agent_with(Budget())).check(Request.of("hi"))
    assert verdict.state == "no_budget" and verdict.target is None and verdict.allowed == ALL_TIERS


async def test_models_whose_estimate_overruns_are_denied() -> None:
    # ~2,000 tokens each way: cheap costs ~$0.004, pricey ~$0.4; $0.05 is left.
    agent = await agent_with(Budget(daily_usd=1.0), 0.95)
    request = Request.of("x" * 8000, max_tokens=2000)
    verdict = await agent.check(request)
    assert verdict.denied_models == frozenset({"pricey"})
    assert Tier.CLOUD in verdict.allowed  # cheap still fits
    assert verdict.metrics["estimates_usd"]["pricey"] > verdict.metrics["left_usd"]


async def test_a_spike_votes_local() -> None:
    agent = await agent_with(Budget(daily_usd=100.0, monthly_usd=1000.0))
    spike = agent.judge(today=5.0, month=10.0, last_hour=4.0, hours_this_month=100.0)
    assert (spike.state, spike.target) == ("spike", Tier.LOCAL)
    # All of the month's spend in its last hour (a first day of use): no baseline, no spike.
    first = agent.judge(today=0.0001, month=0.0001, last_hour=0.0001, hours_this_month=100.0)
    assert first.state == "ok"


@given(
    prices=st.lists(
        st.tuples(st.none() | st.floats(0, 50), st.none() | st.floats(0, 50)),
        min_size=1,
        max_size=6,
    ),
    spent=st.floats(0, 1.2),
    chars=st.integers(1, 40_000),
    cap=st.none() | st.integers(1, 8000),
    system=st.integers(0, 20_000),  # words of the odd models' own system prompts
    own_system=st.booleans(),  # the request brings its own (then the models' are not sent)
)
def test_skipping_the_estimates_when_the_dearest_fits_changes_no_verdict(
    prices: list[tuple[float | None, float | None]],
    spent: float,
    chars: int,
    cap: int | None,
    system: int,
    own_system: bool,
) -> None:
    models = [
        ModelSpec(name=f"m{i}", tier=Tier.CLOUD, litellm_model=f"openai/m{i}",
                  input_cost_per_mtok=p_in, output_cost_per_mtok=p_out,
                  system_prompt="w " * system if i % 2 and system else None)
        for i, (p_in, p_out) in enumerate(prices)
    ]  # fmt: skip
    agent = CostAgent()
    agent._budget = Budget(daily_usd=1.0)
    agent._catalog = Catalog(models)
    agent._spend = SpendTracker.seeded(spent, spent)
    messages = [{"role": "user", "content": "x" * chars}]
    if own_system:
        messages.insert(0, {"role": "system", "content": "be brief"})
    request = Request.of(messages, max_tokens=cap)
    fast = asyncio.run(agent.check(request))
    answer = completion_tokens(request, agent.expected_completion)
    every = {  # each model priced for the prompt it is sent
        m.name: cost_usd(m, messages_tokens(as_sent(request.messages, m.system_prompt)), answer)
        for m in models
    }
    full = agent.judge(today=spent, month=spent, estimates=every)
    assert fast.model_dump(exclude={"at"}) == full.model_dump(exclude={"at"})


@given(st.floats(0, 10), st.floats(0, 10))
def test_more_spend_never_allows_more(a: float, b: float) -> None:
    agent = CostAgent()
    agent._budget = Budget(daily_usd=5.0)
    agent._catalog = Catalog(CATALOG)
    low, high = sorted((a, b))
    assert agent.judge(today=high, month=high).allowed <= agent.judge(today=low, month=low).allowed
    assert Tier.LOCAL in agent.judge(today=high, month=high).allowed  # never every tier


async def test_over_budget_the_decision_says_so_and_local_answers(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    local = model_toml(
        "lan-free", stub.url, tier="local", input_cost_per_mtok=0.0, output_cost_per_mtok=0.0
    )
    cloud = model_toml("stub-cloud", stub.url)
    config = write_config(cloud, local, extra="[budget]\ndaily_usd = 0.0\n")
    async with Orchestra(config=config) as orc:
        result = await orc.complete("Prove Fermat's last theorem in detail, step by step.")
    assert result.model == "lan-free"
    cost = next(v for v in result.verdicts if v.agent == "cost")
    assert cost.state == "over_budget"
    assert any(e.tier is Tier.CLOUD and e.by == "cost" for e in result.decision.excluded)


async def test_200_concurrent_requests_cannot_overspend(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    # Each call's estimate (~25 prompt + 64 completion tokens at $1000/Mtok) is ~$0.09: a $2
    # budget affords about 22 of 200 requests arriving at once. Without reservations every
    # request would see the same untouched budget and all 200 would be sent.
    stub.behaviour = Behaviour(reply="ok", delay_s=0.05)
    expensive = model_toml(
        "stub-cloud", stub.url, input_cost_per_mtok=1000.0, output_cost_per_mtok=1000.0
    )
    config = write_config(expensive, extra="[budget]\ndaily_usd = 2.0\n")
    async with Orchestra(config=config, agents=[]) as orc:
        outcomes = await asyncio.gather(
            *(orc.complete(f"request number {i}", max_tokens=64) for i in range(200)),
            return_exceptions=True,
        )
        spend = await orc.spend_summary()
        history = await orc.history(limit=500)
    answered = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, AllCandidatesFailed)]
    assert len(answered) + len(refused) == 200 and answered and refused
    assert all(o.attempts[0].error_kind == "budget" for o in refused)
    assert spend["today_usd"] <= 2.0
    assert spend["today_usd"] == pytest.approx(sum(r.cost_usd for r in answered))
    assert len(stub.requests) == len(answered)  # refused requests never reached the provider
    assert len(history) == 200


def test_the_spend_view_starts_a_day_at_the_budgets_midnight_not_the_machines() -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from orchestra.spend.calendar import Calendar
    from orchestra.spend.ledger import SpendTotals
    from orchestra.spend.tracker import SpendTracker

    # Midnight in Tokyo is 15:00 in UTC: totals read a second before it, asked a second after.
    midnight = datetime(2026, 11, 30, tzinfo=ZoneInfo("Asia/Tokyo")).timestamp()
    totals = SpendTotals(today_usd=2.0, month_usd=9.0, at=midnight - 1)
    tokyo = SpendTracker(totals, calendar=Calendar("Asia/Tokyo"))
    assert tokyo.today(midnight + 1) == 0.0, "a new day in the budget's time zone"
    assert tokyo.this_month(midnight + 1) == 9.0, "the same month there"
    utc = SpendTracker(totals, calendar=Calendar("UTC"))
    assert utc.today(midnight + 1) == 2.0, "in UTC the day goes on"


def test_a_models_own_system_prompt_counts_in_its_estimate() -> None:
    wordy = ModelSpec(name="wordy", tier=Tier.CLOUD, litellm_model="openai/wordy",
                      input_cost_per_mtok=10.0, output_cost_per_mtok=10.0,
                      system_prompt="rule " * 2000)  # fmt: skip
    terse = wordy.model_copy(update={"name": "terse", "system_prompt": None})
    agent = CostAgent()
    agent._budget = Budget(daily_usd=1.0)
    agent._catalog = Catalog([wordy, terse])
    agent._spend = SpendTracker.seeded(0.99, 0.99)  # $0.01 left: 1,000 tokens at $10/M
    verdict = asyncio.run(agent.check(Request.of("hi", max_tokens=1)))
    assert verdict.denied_models == frozenset({"wordy"}), "its 2,000-word prompt is sent too"
