"""What replay reports for one policy: counts, tier mix, estimated cost, agreement."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from orchestra.core.tier import TIERS


@dataclass
class PolicyReport:
    """What one policy would have done with the replayed history."""

    policy: str
    requests: int = 0
    decided: int = 0
    no_allowed_model: int = 0
    errors: int = 0  # other refusals: a forced model gone from the catalog, a policy bug
    tier_counts: dict[str, int] = field(default_factory=dict)
    estimated_cost_usd: float = 0.0  # stored token counts x the first candidates' prices
    unpriced: int = 0  # decided requests whose first candidate has no known price
    # Decided requests that ended live with no tokens stored (every model failed, or refused):
    # `unmetered_cost_usd` estimates them apart, from their prompt's estimated tokens and the
    # replayed history's mean answer length.
    unmetered: int = 0
    unmetered_prompt_usd: float = 0.0
    unmetered_usd_per_answer_token: float = 0.0  # their first candidates' output prices, summed
    answer_tokens: int = 0  # answer tokens of the answered requests (the mean's sum)
    answered: int = 0  # requests a model actually answered
    model_agreement: int = 0  # ... whose first candidate is the model that answered
    tier_agreement: int = 0  # ... whose first candidate's tier is the tier that answered
    live_decisions: int = 0  # requests with a stored decision
    decision_agreement: int = 0  # ... recomputed with the same candidates and target
    refused_live: int = 0  # requests refused live (NoAllowedModelError)
    refused_again: int = 0  # ... and refused again under this policy
    actual_tier_counts: dict[str, int] = field(default_factory=dict)
    actual_cost_usd: float = 0.0

    @property
    def mean_answer_tokens(self) -> float:
        """The answered requests' mean answer length (what an unmetered request is costed at)."""
        return self.answer_tokens / self.answered if self.answered else 0.0

    @property
    def unmetered_cost_usd(self) -> float:
        """An estimate of what the unmetered requests would have cost had the policy's first
        choices answered them (not in `estimated_cost_usd`, which counts stored tokens only)."""
        answers = self.unmetered_usd_per_answer_token * self.mean_answer_tokens
        return self.unmetered_prompt_usd + answers

    @property
    def tier_mix(self) -> dict[str, float]:
        """Share of decided requests per first-candidate tier."""
        return _shares(self.tier_counts, self.decided)

    @property
    def actual_tier_mix(self) -> dict[str, float]:
        """Share of answered requests per tier that actually answered."""
        return _shares(self.actual_tier_counts, self.answered)

    @property
    def model_agreement_rate(self) -> float | None:
        return self.model_agreement / self.answered if self.answered else None

    @property
    def tier_agreement_rate(self) -> float | None:
        return self.tier_agreement / self.answered if self.answered else None

    @property
    def decision_agreement_rate(self) -> float | None:
        return self.decision_agreement / self.live_decisions if self.live_decisions else None

    def add(self, other: PolicyReport) -> None:
        """Count `other` (the same policy's report on other requests) into this one."""
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, dict):
                for k, n in theirs.items():
                    mine[k] = mine.get(k, 0) + n
            elif f.name != "policy":
                setattr(self, f.name, mine + theirs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "requests": self.requests,
            "decided": self.decided,
            "no_allowed_model": self.no_allowed_model,
            "errors": self.errors,
            "tier_mix": self.tier_mix,
            "tier_counts": dict(self.tier_counts),
            "estimated_cost_usd": self.estimated_cost_usd,
            "unpriced": self.unpriced,
            "unmetered": self.unmetered,
            "unmetered_cost_usd": self.unmetered_cost_usd,
            "answered": self.answered,
            "model_agreement": self.model_agreement_rate,
            "tier_agreement": self.tier_agreement_rate,
            "decision_agreement": self.decision_agreement_rate,
            "refused_live": self.refused_live,
            "refused_again": self.refused_again,
            "actual_tier_mix": self.actual_tier_mix,
            "actual_cost_usd": self.actual_cost_usd,
        }


def _shares(counts: dict[str, int], total: int) -> dict[str, float]:
    return {t.value: counts.get(t.value, 0) / total if total else 0.0 for t in TIERS}


# Below this many requests, another process's start-up (~0.2 s) does not pay for itself.
