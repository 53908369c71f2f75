"""The built-in agents in an experiment: their pure `judge` methods fed with scripted state.

`orchestra experiment` (see `orchestra.lab.experiment`) runs these: an experiment is about the
built-in agents, so the lab names them; the runtime never does (it goes through the registry).
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from orchestra.agents.complexity.agent import ComplexityAgent
from orchestra.agents.connectivity import ConnectivityAgent, Probe, ProbeResult
from orchestra.agents.context import AgentContext
from orchestra.agents.cost import CostAgent
from orchestra.agents.resource import Reading, ResourceAgent
from orchestra.core.catalog import Catalog
from orchestra.core.tier import Tier
from orchestra.core.verdict import Verdict
from orchestra.lab.scenario import Scenario
from orchestra.lab.world import SimRequest, World, cost_usd
from orchestra.spend.budget import Budget
from orchestra.spend.tracker import SpendTracker

# Simulated round trips for the connectivity agent's probes (well under its degraded threshold).
_PROBE_MS = {Tier.EDGE: 20.0, Tier.CLOUD: 60.0}


class SimulatedAgents:
    """One policy's set of the built-in agents, judging scripted state (fresh per policy: the
    resource agent keeps hysteresis state)."""

    def __init__(self, scenario: Scenario, catalog: Catalog) -> None:
        self.scenario, self.catalog = scenario, catalog
        self.resource = ResourceAgent()
        self.connectivity = ConnectivityAgent()
        self.complexity = ComplexityAgent(model="shipped")
        self.cost = CostAgent()
        b = scenario.budget
        budget = Budget(daily_usd=b.daily_usd, alert_share=b.alert_share)
        # The cost agent reads the budget and catalog in `start`, which does no I/O.
        _run_now(self.cost.start(AgentContext(catalog=catalog, budget=budget, spend=_NO_SPEND)))
        self.probes = [
            Probe(f"{t}.simulated", 443, t) for t in (Tier.EDGE, Tier.CLOUD) if catalog.in_tier(t)
        ]

    def verdicts(self, r: SimRequest, w: World, spent: float) -> list[Verdict]:
        m = self.scenario.machine
        reading = Reading(
            ram_available_mb=m.ram_available_mb,
            ram_percent=m.ram_percent,
            cpu_percent=w.cpu_percent,
            cores=m.cores,
        )
        probes = [
            ProbeResult(p, ok=False, ms=0.0, error="network unreachable (simulated)")
            if p.tier in w.offline
            else ProbeResult(p, ok=True, ms=_PROBE_MS[p.tier])
            for p in self.probes
        ]
        limited = self.scenario.budget.daily_usd is not None
        # Exact token counts stand in for the production estimate (as if max_tokens were set).
        estimates = {s.name: cost_usd(s, r) for s in self.catalog} if limited else {}
        out = [
            self.resource.judge(reading),
            self.connectivity.judge(probes),
            self.cost.judge(today=spent, month=spent, estimates=estimates),
            self.complexity.judge(r.score),
        ]
        if w.down_models:
            out.append(
                Verdict(
                    agent="breaker",
                    denied_models=w.down_models,
                    confidence=0.0,
                    state="open",
                    reason=f"provider outage: {', '.join(sorted(w.down_models))}",
                )
            )
        return out


_NO_SPEND = SpendTracker.seeded(0.0, 0.0)


def _run_now(coro: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine that never suspends, without an event loop (callers may be in one)."""
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise RuntimeError("expected a coroutine that completes without waiting")
