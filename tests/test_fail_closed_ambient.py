"""An ambient agent that fails closed keeps requests local until it has answered once: before
its first sample (still pending) it binds every policy as it would had it failed."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from orchestra import Agent, AgentContext, Budget, Candidate, Decision, Request, Tier, Verdict
from orchestra.agents.panel import AgentPanel
from orchestra.core.catalog import Catalog
from orchestra.core.model_spec import ModelSpec
from orchestra.policies.base import FunctionPolicy, decide_checked
from orchestra.spend.tracker import SpendTracker

CATALOG = Catalog(
    [
        ModelSpec(name="cloud-a", tier=Tier.CLOUD, litellm_model="openai/a"),
        ModelSpec(name="on-device", tier=Tier.LOCAL, litellm_model="openai/l"),
    ]
)


class SlowTunnelWatch(Agent):
    """Ambient, fail-closed: says whether the tunnel to the cloud is safe; its first probe has
    not come back yet."""

    name = "tunnel"
    interval = 60.0
    timeout_s = 10.0
    fail_closed = True

    def __init__(self) -> None:
        self.answer = asyncio.Event()

    async def check(self, request: Request | None) -> Verdict:
        await self.answer.wait()
        return self.verdict(confidence=0.0, reason="tunnel up")


def cloud_first(request: Request, verdicts: Sequence[Verdict], catalog: Catalog) -> Decision:
    order = ["cloud-a", "on-device"]
    return Decision(
        policy="cloud-first",
        candidates=tuple(Candidate(model=m, tier=catalog.get(m).tier) for m in order),
        reason="cloud, whatever they say",
    )


async def test_a_fail_closed_ambient_agent_binds_before_its_first_sample() -> None:
    context = AgentContext(catalog=CATALOG, budget=Budget(), spend=SpendTracker.seeded(0, 0))
    panel = AgentPanel([SlowTunnelWatch()])
    await panel.start(context, first_sample_s=0.05)  # the first probe is still out
    try:
        request = Request.of("What is the capital of France?")
        (verdict,) = await panel.verdicts(request)
        assert verdict.state == "pending"
        assert verdict.allowed == frozenset({Tier.LOCAL}), "fails closed while pending"
        decision = decide_checked(FunctionPolicy(cloud_first), request, (verdict,), CATALOG)
        assert [c.model for c in decision.candidates] == ["on-device"]
    finally:
        await panel.stop()
