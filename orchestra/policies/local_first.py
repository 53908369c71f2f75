"""Local first: this device answers unless it cannot (resources, capability, latency)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from orchestra.core.catalog import Catalog
from orchestra.core.decision import Candidate, Decision
from orchestra.core.request import Request
from orchestra.core.tier import Tier
from orchestra.core.verdict import Verdict
from orchestra.policies._common import (
    Route,
    Scope,
    by_tier,
    candidate,
    check_weights,
    decision,
    describe_votes,
    explain,
    forced_decision,
    forced_route,
    opening,
    require_models,
)

EXHAUSTED = frozenset({"critical", "no_memory"})


class LocalFirstPolicy:
    """LOCAL first, always, unless the machine cannot take it; then the nearest tier.

    LOCAL is demoted when the resource agent reports `critical` or `no_memory` (it then goes last,
    a fallback rather than a first try), and skipped when disallowed or when no local model meets
    the request's capabilities, context or latency. Votes are shown, never followed.
    """

    name = "local_first"

    def __init__(
        self, resource_agent: str = "resource", weights: Mapping[str, float] | None = None
    ) -> None:
        if not isinstance(resource_agent, str) or not resource_agent:
            raise ValueError(f"resource_agent must be a non-empty string, got {resource_agent!r}")
        self.resource_agent = resource_agent
        self.weights = check_weights(weights)

    def decide(self, request: Request, verdicts: Sequence[Verdict], catalog: Catalog) -> Decision:
        sc, votes, forced = opening(self.weights, request, verdicts, catalog)
        if forced is not None:
            return forced_decision(self.name, forced, sc, votes)
        route, exhausted = self._route(request, verdicts, catalog, sc)
        assert route.target is not None
        first = _why_first(route.target, exhausted, Tier.LOCAL in sc.allowed)
        reason = explain([first, describe_votes(votes)], request, sc.excluded)
        return decision(self.name, route, reason, votes, sc)

    def route(self, request: Request, verdicts: Sequence[Verdict], catalog: Catalog) -> Route:
        """`decide`'s target and candidates, without its explanation."""
        sc, _, forced = opening(self.weights, request, verdicts, catalog)
        if forced is not None:
            return forced_route(forced)
        return self._route(request, verdicts, catalog, sc)[0]

    def _route(
        self, request: Request, verdicts: Sequence[Verdict], catalog: Catalog, sc: Scope
    ) -> tuple[Route, Verdict | None]:
        """The route, and the resource verdict that demoted LOCAL (None if none did)."""
        require_models(request, catalog, sc)
        exhausted = self._exhausted(verdicts)
        tiers = sc.tiers
        if exhausted is not None:
            tiers = sorted(tiers, key=lambda t: t is Tier.LOCAL)  # stable: local moves last
        return Route(tiers[0], _demote(by_tier(sc, tiers, tiers[0]), exhausted)), exhausted

    def _exhausted(self, verdicts: Sequence[Verdict]) -> Verdict | None:
        for v in verdicts:
            if v.agent == self.resource_agent and not v.neutral and v.state in EXHAUSTED:
                return v
        return None


def _demote(candidates: tuple[Candidate, ...], exhausted: Verdict | None) -> tuple[Candidate, ...]:
    """Say why LOCAL models sit at the end of the chain when resources are exhausted."""
    if exhausted is None:
        return candidates
    last = f"local last: resources exhausted ({exhausted.state})"
    return tuple(
        candidate(c.model, c.tier, last) if c.tier is Tier.LOCAL else c for c in candidates
    )


def _why_first(first: Tier, exhausted: Verdict | None, local_allowed: bool) -> str:
    if first is Tier.LOCAL:
        return "local first"
    if exhausted is not None:
        why = f"resources exhausted ({exhausted.agent}: {exhausted.reason or exhausted.state})"
    elif not local_allowed:
        why = "local disallowed"
    else:
        why = "no local model meets the request"
    return f"{why}: nearest is {first}"


__all__ = ["EXHAUSTED", "LocalFirstPolicy"]
