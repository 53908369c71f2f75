"""The shape shared by policies that rank every allowed model on one measure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from orchestra.core.catalog import Catalog
from orchestra.core.decision import Decision, Exclusion
from orchestra.core.model_spec import ModelSpec
from orchestra.core.request import Request
from orchestra.core.verdict import Verdict
from orchestra.policies._common import (
    check_weights,
    describe_votes,
    explain,
    forced_model,
    ranked,
    require_models,
    scope,
    tally,
)


class RankingPolicy:
    """Constraints and hints first, then every allowed model sorted by `key` (stable: ties keep
    tier then catalog order), each candidate explained by `why`. Subclasses give `name`,
    `headline` ("cheapest first"), `key` and `why`, and may add hard `limits`.
    """

    name: ClassVar[str]
    headline: ClassVar[str]

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        self.weights = check_weights(weights)

    def key(self, spec: ModelSpec) -> tuple[Any, ...]:
        raise NotImplementedError(f"{type(self).__name__} must define key()")

    def why(self, spec: ModelSpec) -> str:
        raise NotImplementedError(f"{type(self).__name__} must define why()")

    def limits(self) -> list[Exclusion]:
        """Exclusions of the policy's own (e.g. a tier cap); none by default."""
        return []

    def decide(self, request: Request, verdicts: Sequence[Verdict], catalog: Catalog) -> Decision:
        sc = scope(request, verdicts, catalog, self.limits())
        votes = tally(verdicts, self.weights)
        if request.model is not None:
            return forced_model(self.name, request, catalog, sc, votes)
        require_models(request, catalog, sc)
        candidates = ranked(sc.models, self.key, self.why)
        story = [f"{self.headline}: {candidates[0].model}", describe_votes(votes)]
        return Decision(
            policy=self.name,
            candidates=candidates,
            reason=explain(story, request, sc.excluded),
            target=candidates[0].tier,
            votes=votes,
            excluded=sc.excluded,
        )
