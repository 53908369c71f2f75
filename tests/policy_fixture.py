"""Policies importable as 'policy_fixture:...' by the config tests (resolve_policy)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from orchestra import Candidate, Catalog, Decision, Request, Verdict


class FirstModelPolicy:
    """Always the catalog's first model; records the weights it was built with."""

    name = "first-model"

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        self.weights = dict(weights or {})

    def decide(self, request: Request, verdicts: Sequence[Verdict], catalog: Catalog) -> Decision:
        spec = next(iter(catalog))
        return Decision(
            policy=self.name,
            candidates=(Candidate(model=spec.name, tier=spec.tier),),
            reason="first model",
        )


class NoWeightsPolicy:
    """A policy whose constructor takes no parameters."""

    name = "no-weights"

    def decide(self, request: Request, verdicts: Sequence[Verdict], catalog: Catalog) -> Decision:
        raise NotImplementedError


READY_MADE = FirstModelPolicy(weights={"cost": 3.0})

NOT_A_POLICY = 42


class Exploding:
    """A policy whose constructor raises (a bug in a user's policy, met at start-up)."""

    name = "exploding"

    def __init__(self) -> None:
        raise RuntimeError("the policy fell over")

    def decide(self, request: Request, verdicts: Sequence[Verdict], catalog: Catalog) -> Decision:
        raise NotImplementedError
