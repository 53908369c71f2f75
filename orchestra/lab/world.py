"""What an experiment simulates: scripted requests and the state of the world at an instant."""

from __future__ import annotations

from dataclasses import dataclass

from orchestra.core.model_spec import ModelSpec
from orchestra.core.tier import Tier


@dataclass(frozen=True, slots=True)
class SimRequest:
    """One scripted request: when it arrives, how hard it is, how many tokens it takes."""

    index: int
    t: float
    score: float
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class World:
    """The scripted state at one instant."""

    offline: frozenset[Tier]
    cpu_percent: float
    down_models: frozenset[str]
    drawn_usd: float


def cost_usd(spec: ModelSpec, r: SimRequest) -> float:
    """What answering `r` on `spec` costs (an unknown price counts as free)."""
    return (
        r.prompt_tokens * (spec.input_cost_per_mtok or 0.0)
        + r.completion_tokens * (spec.output_cost_per_mtok or 0.0)
    ) / 1e6
