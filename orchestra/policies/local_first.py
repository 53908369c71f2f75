"""Local first: this device answers unless it cannot (resources, capability, latency)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from orchestra.core.catalog import Catalog
from orchestra.core.decision import Candidate, Decision
from orchestra.core.request import Request
from orchestra.core.tier import Tier
from orchestra.core.verdict import Verdict
from orchestra.policies._common import (
    by_tier,
    check_weights,
    describe_votes,
    explain,
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
        sc, votes, forced = opening(self.name, self.weights, request, verdicts, catalog)
        if forced is not None:
            return forced
        require_models(request, catalog, sc)
        exhausted = self._exhausted(verdicts)
        tiers = sc.tiers
        if exhausted is not None:
            tiers = sorted(tiers, key=lambda t: t is Tier.LOCAL)  # stable: local moves last
        story = [_why_first(tiers[0], exhausted, Tier.LOCAL in sc.allowed), describe_votes(votes)]
        return Decision(
            policy=self.name,
            candidates=_demote(by_tier(sc, tiers, tiers[0]), exhausted),
            reason=explain(story, request, sc.excluded),
            target=tiers[0],
            votes=votes,
            excluded=sc.excluded,
        )

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
        c.model_copy(update={"reason": last}) if c.tier is Tier.LOCAL else c for c in candidates
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
