"""Cost saver: the cheapest model first, across the allowed tiers."""

from __future__ import annotations

from collections.abc import Mapping

from orchestra.core.decision import Exclusion
from orchestra.core.model_spec import ModelSpec
from orchestra.core.tier import TIERS
from orchestra.policies._common import parse_tier
from orchestra.policies._ranking import RankingPolicy
from orchestra.policies.constraints import exclusion


def price(spec: ModelSpec) -> float | None:
    """Input + output price per million tokens, None when either is unknown."""
    if spec.input_cost_per_mtok is None or spec.output_cost_per_mtok is None:
        return None
    return spec.input_cost_per_mtok + spec.output_cost_per_mtok


class CostSaverPolicy(RankingPolicy):
    """Cheapest first: free models, then by price, unknown price last; a tie goes to the lower tier.

    `max_tier` caps the tiers tried (a hard limit, like an agent's: a `model` override above it is
    refused).
    """

    name = "cost_saver"
    headline = "cheapest first"
    pure_ranking = True

    def __init__(
        self, max_tier: str | None = None, weights: Mapping[str, float] | None = None
    ) -> None:
        super().__init__(weights)
        self.max_tier = None if max_tier is None else parse_tier(max_tier, "max_tier")

    def key(self, spec: ModelSpec) -> tuple[int, float, int]:
        p = price(spec)
        # Free, then priced, then unknown: an unknown price may be anything, so it is tried last.
        group = 2 if p is None else (0 if p == 0 else 1)
        return (group, p or 0.0, spec.tier.rank)

    def why(self, spec: ModelSpec) -> str:
        p = price(spec)
        cost = "price unknown" if p is None else ("free" if p == 0 else f"${p:g}/Mtok in+out")
        return f"{cost}, {spec.tier}"

    def limits(self) -> list[Exclusion]:
        cap = self.max_tier
        if cap is None:
            return []
        why = f"above max_tier {cap}"
        return [exclusion(t, None, self.name, why) for t in TIERS if t > cap]


__all__ = ["CostSaverPolicy", "price"]
