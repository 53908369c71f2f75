"""Quality first: the best model first, within the budget the agents allow."""

from __future__ import annotations

from collections.abc import Mapping

from orchestra.core.model_spec import ModelSpec
from orchestra.core.tier import Tier
from orchestra.policies._common import is_number, parse_tier
from orchestra.policies._ranking import RankingPolicy

# A model of unknown quality is ranked as if it had its tier's prior (a guess, but the tier order
# is the one thing we know: cloud models are usually the strongest).
TIER_QUALITY = {Tier.LOCAL: 0.3, Tier.EDGE: 0.6, Tier.CLOUD: 0.9}


class QualityFirstPolicy(RankingPolicy):
    """Highest `quality` first (unknown quality: its tier's prior), a tie to the higher tier.

    Budgets are not this policy's business: the cost agent's disallowed tiers and denied models
    already constrain the candidates. `tier_quality` overrides the priors, e.g. `{edge = 0.7}`.
    """

    name = "quality_first"
    headline = "best quality first"
    pure_ranking = True

    def __init__(
        self,
        tier_quality: Mapping[str, float] | None = None,
        weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(weights)
        self.tier_quality = dict(TIER_QUALITY)
        for key, value in dict(tier_quality or {}).items():
            tier = parse_tier(key, "a tier_quality key")
            if not is_number(value) or not 0 <= value <= 1:
                raise ValueError(f"tier_quality[{key!r}] must be a number in [0, 1], got {value!r}")
            self.tier_quality[tier] = float(value)

    def _quality(self, spec: ModelSpec) -> float:
        return self.tier_quality[spec.tier] if spec.quality is None else spec.quality

    def key(self, spec: ModelSpec) -> tuple[float, int]:
        return (-self._quality(spec), -spec.tier.rank)

    def why(self, spec: ModelSpec) -> str:
        if spec.quality is None:
            return f"quality unknown, {spec.tier} prior {self._quality(spec):.2f}"
        return f"quality {spec.quality:.2f}, {spec.tier}"


__all__ = ["TIER_QUALITY", "QualityFirstPolicy"]
