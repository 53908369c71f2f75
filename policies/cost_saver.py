"""Cost saver: the cheapest model first, across the allowed tiers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from orchestra import Catalog, Decision, Exclusion, Request, Verdict
from orchestra.model_spec import ModelSpec
from orchestra.tier import TIERS
from policies._common import (
    check_weights,
    describe_votes,
    explain,
    forced_model,
    parse_tier,
    ranked,
    require_models,
    scope,
    tally,
)


def price(spec: ModelSpec) -> float | None:
    """Input + output price per million tokens, None when either is unknown."""
    if spec.input_cost_per_mtok is None or spec.output_cost_per_mtok is None:
        return None
    return spec.input_cost_per_mtok + spec.output_cost_per_mtok


class CostSaverPolicy:
    """Cheapest first: free models, then by price, unknown price last; a tie goes to the lower tier.

    `max_tier` caps the tiers tried (a hard limit, like an agent's: a `model` override above it is
    refused).
    """

    name = "cost_saver"

    def __init__(
        self, max_tier: str | None = None, weights: Mapping[str, float] | None = None
    ) -> None:
        self.max_tier = None if max_tier is None else parse_tier(max_tier, "max_tier")
        self.weights = check_weights(weights)

    def decide(self, request: Request, verdicts: Sequence[Verdict], catalog: Catalog) -> Decision:
        sc = scope(request, verdicts, catalog, self._limits())
        votes = tally(verdicts, self.weights)
        if request.model is not None:
            return forced_model(self.name, request, catalog, sc, votes)
        require_models(request, catalog, sc)
        candidates = ranked(sc.models, _key, _why)
        story = [f"cheapest first: {candidates[0].model}", describe_votes(votes)]
        return Decision(
            policy=self.name,
            candidates=candidates,
            reason=explain(story, request, sc.excluded),
            target=candidates[0].tier,
            votes=votes,
            excluded=sc.excluded,
        )

    def _limits(self) -> list[Exclusion]:
        cap = self.max_tier
        if cap is None:
            return []
        why = f"above max_tier {cap}"
        return [Exclusion(tier=t, by=self.name, reason=why) for t in TIERS if t > cap]


def _key(spec: ModelSpec) -> tuple[int, float, int]:
    p = price(spec)
    # Free, then priced, then unknown: an unknown price may be anything, so it is tried last.
    group = 2 if p is None else (0 if p == 0 else 1)
    return (group, p or 0.0, spec.tier.rank)


def _why(spec: ModelSpec) -> str:
    p = price(spec)
    cost = "price unknown" if p is None else ("free" if p == 0 else f"${p:g}/Mtok in+out")
    return f"{cost}, {spec.tier}"


__all__ = ["CostSaverPolicy", "price"]
