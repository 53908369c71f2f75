"""Ordering the models of one tier: by catalog priority, in turn, by latency or by price."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict

from orchestra.core.model_spec import ModelSpec
from orchestra.core.tier import Tier

Strategy = Literal["priority", "round_robin", "least_latency", "cheapest"]
STRATEGIES: frozenset[str] = frozenset(get_args(Strategy))


class BalancingConfig(BaseModel):
    """`[balancing]`: how models of one tier are ordered."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    local: Strategy = "priority"
    edge: Strategy = "priority"
    cloud: Strategy = "priority"

    def by_tier(self) -> dict[Tier, Strategy]:
        return {Tier.LOCAL: self.local, Tier.EDGE: self.edge, Tier.CLOUD: self.cloud}


class LatencyTracker:
    """An exponentially weighted moving average of latencies (ms), per model name.

    `alpha` is the weight of the newest observation: higher follows change faster, lower
    smooths out noise. The first observation of a model is its average.
    """

    def __init__(self, alpha: float = 0.3) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError("alpha must be in (0, 1]")
        self.alpha = alpha
        self._ewma: dict[str, float] = {}
        self._at: dict[str, float] = {}

    def observe(self, model: str, ms: float) -> None:
        if not math.isfinite(ms) or ms < 0:
            raise ValueError(f"latency must be a finite number >= 0, got {ms!r}")
        previous = self._ewma.get(model)
        self._ewma[model] = ms if previous is None else previous + self.alpha * (ms - previous)
        self._at[model] = time.monotonic()

    def answered_at(self, model: str) -> float | None:
        """When `model` last answered (`time.monotonic()`), None if it never has."""
        return self._at.get(model)

    def ewma(self, model: str) -> float | None:
        return self._ewma.get(model)

    def snapshot(self) -> dict[str, float]:
        """A copy of every model's average, for display and explanations."""
        return dict(self._ewma)


class Balancer:
    """Orders a tier's models by the strategy configured for that tier ("priority" if none).

    - priority: catalog order, unchanged.
    - round_robin: catalog order rotated by one more place on each call for the tier, so load
      spreads while failover still walks every model.
    - least_latency: fastest EWMA first. Models with no measurement yet come first (in catalog
      order): otherwise a model that was never called would never be measured, and one call is
      a cheap price for knowing.
    - cheapest: by input + output price per Mtok; a model missing either price comes last,
      because a partly unknown price cannot be compared.
    Ties keep catalog order (the sorts are stable). The only state is the round-robin counters
    and the latency tracker.
    """

    def __init__(
        self,
        strategies: Mapping[Tier, Strategy] | None = None,
        latency: LatencyTracker | None = None,
    ) -> None:
        self.strategies: dict[Tier, Strategy] = dict(strategies or {})
        for tier, strategy in self.strategies.items():
            if strategy not in STRATEGIES:
                raise ValueError(
                    f"unknown balancing strategy {strategy!r} for tier {tier}; "
                    f"expected one of {sorted(STRATEGIES)}"
                )
        self.latency = latency if latency is not None else LatencyTracker()
        self._turns: dict[Tier, int] = {}

    def strategy(self, tier: Tier) -> Strategy:
        return self.strategies.get(tier, "priority")

    def order(self, tier: Tier, models: Sequence[ModelSpec]) -> list[ModelSpec]:
        strategy = self.strategy(tier)
        if strategy == "round_robin":
            return self._rotate(tier, models)
        if strategy == "least_latency":
            return sorted(models, key=self._latency_key)
        if strategy == "cheapest":
            return sorted(models, key=_price_key)
        return list(models)

    def _rotate(self, tier: Tier, models: Sequence[ModelSpec]) -> list[ModelSpec]:
        turn = self._turns.get(tier, 0)
        self._turns[tier] = turn + 1
        if not models:
            return []
        start = turn % len(models)
        return [*models[start:], *models[:start]]

    def _latency_key(self, spec: ModelSpec) -> tuple[bool, float]:
        ms = self.latency.ewma(spec.name)
        return (ms is not None, ms or 0.0)


def price_per_mtok(spec: ModelSpec) -> float | None:
    """Input + output price per million tokens, or None if either is unknown."""
    if spec.input_cost_per_mtok is None or spec.output_cost_per_mtok is None:
        return None
    return spec.input_cost_per_mtok + spec.output_cost_per_mtok


def _price_key(spec: ModelSpec) -> tuple[bool, float]:
    price = price_per_mtok(spec)
    return (price is None, price or 0.0)
