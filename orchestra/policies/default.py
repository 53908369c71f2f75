"""The default policy: constraints, then a confidence-weighted vote, then nearest tier first."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from orchestra.core.catalog import Catalog
from orchestra.core.decision import Decision
from orchestra.core.request import Request
from orchestra.core.tier import Tier
from orchestra.core.verdict import Verdict
from orchestra.policies._common import (
    STALE_WEIGHT,
    Route,
    Scope,
    by_tier,
    check_weights,
    decision,
    describe_votes,
    explain,
    forced_decision,
    forced_route,
    nearest_first,
    opening,
    require_models,
    winner,
)

__all__ = ["STALE_WEIGHT", "DefaultPolicy"]


class DefaultPolicy:
    """Constraints first, then a vote, then candidates ordered nearest the winning tier.

    1. Every tier some agent disallows is removed (the decision says which agent and why), and
       every model the request's hints rule out (capabilities, context, latency).
    2. Each agent votes for its target tier with its confidence times its weight (stale ambient
       verdicts count half); the tier with most votes wins, the cheaper tier on a tie, LOCAL when
       nobody votes.
    3. Candidates are the models of the allowed tiers, nearest the winner first (the cheaper of
       two equally near tiers first), catalog order within a tier: that is the failover chain.

    A request's `model` hint is honoured unless its tier is disallowed; a `tier` hint limits the
    candidates to that tier.
    """

    name = "default"

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        self.weights = check_weights(weights)

    def decide(self, request: Request, verdicts: Sequence[Verdict], catalog: Catalog) -> Decision:
        sc, votes, forced = opening(self.weights, request, verdicts, catalog)
        if forced is not None:
            return forced_decision(self.name, forced, sc, votes)
        route = _route(request, catalog, sc, votes)
        first = route.candidates[0].tier
        assert route.target is not None
        reason = explain(_story(votes, route.target, first), request, sc.excluded)
        return decision(self.name, route, reason, votes, sc)

    def route(self, request: Request, verdicts: Sequence[Verdict], catalog: Catalog) -> Route:
        """`decide`'s target and candidates, without its explanation."""
        sc, votes, forced = opening(self.weights, request, verdicts, catalog)
        if forced is not None:
            return forced_route(forced)
        return _route(request, catalog, sc, votes)


def _route(request: Request, catalog: Catalog, sc: Scope, votes: dict[Tier, float]) -> Route:
    require_models(request, catalog, sc)
    target = winner(votes)
    return Route(target, by_tier(sc, nearest_first(sc.tiers, target), target))


def _story(votes: dict[Tier, float], target: Tier, first: Tier) -> list[str]:
    if votes:
        parts = [f"vote for {target} ({describe_votes(votes).removeprefix('votes ')})"]
    else:
        parts = ["no votes: local first"]
    if first is not target:
        parts.append(f"{target} unavailable, nearest is {first}")
    return parts
