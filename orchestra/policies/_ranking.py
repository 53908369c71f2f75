"""The shape shared by policies that rank every allowed model on one measure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from orchestra.core.catalog import Catalog
from orchestra.core.decision import Candidate, Decision, Exclusion
from orchestra.core.model_spec import ModelSpec
from orchestra.core.request import Request
from orchestra.core.tier import Tier
from orchestra.core.verdict import Verdict
from orchestra.policies._common import (
    Route,
    Scope,
    check_weights,
    decision,
    describe_votes,
    explain,
    forced_route,
    forced_spec,
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
    # Set (in the class's own body: subclasses do not inherit it) when `key` and `why` depend on
    # the model and the policy's construction-time parameters alone, so rankings can be reused.
    pure_ranking: ClassVar[bool] = False

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        self.weights = check_weights(weights)
        # Rankings already built, by the identity of the usable lists (see `_ranked`).
        self._cache: dict[tuple[int, ...], tuple[Any, tuple[Candidate, ...]]] = {}

    def key(self, spec: ModelSpec) -> tuple[Any, ...]:
        raise NotImplementedError(f"{type(self).__name__} must define key()")

    def why(self, spec: ModelSpec) -> str:
        raise NotImplementedError(f"{type(self).__name__} must define why()")

    def limits(self) -> list[Exclusion]:
        """Exclusions of the policy's own (e.g. a tier cap); none by default."""
        return []

    def decide(self, request: Request, verdicts: Sequence[Verdict], catalog: Catalog) -> Decision:
        sc, votes, route = self._plan(request, verdicts, catalog)
        if request.model is not None:
            reason = f"model {request.model!r} requested by the caller"
        else:
            story = [f"{self.headline}: {route.candidates[0].model}", describe_votes(votes)]
            reason = explain(story, request, sc.excluded)
        return decision(self.name, route, reason, votes, sc)

    def route(self, request: Request, verdicts: Sequence[Verdict], catalog: Catalog) -> Route:
        """`decide`'s target and candidates, without its explanation."""
        return self._plan(request, verdicts, catalog)[2]

    def _plan(
        self, request: Request, verdicts: Sequence[Verdict], catalog: Catalog
    ) -> tuple[Scope, dict[Tier, float], Route]:
        sc = scope(request, verdicts, catalog, self.limits())
        votes = tally(verdicts, self.weights)
        if request.model is not None:
            return sc, votes, forced_route(forced_spec(request, catalog, sc))
        require_models(request, catalog, sc)
        candidates = self._ranked(sc)
        return sc, votes, Route(candidates[0].tier, candidates)

    def _ranked(self, sc: Scope) -> tuple[Candidate, ...]:
        """The usable models ranked: built once per distinct set of usable lists (by identity,
        as `by_tier`; the entry keeps the lists alive)."""
        lists = tuple(sc.usable[t] for t in sc.tiers)
        key = tuple(map(id, lists))
        found = self._cache.get(key)
        if found is not None:
            return found[1]
        built = ranked([m for ms in lists for m in ms], self.key, self.why)
        if not vars(type(self)).get("pure_ranking", False):
            return built  # a subclass's `key` or `why` may change over time: not cached
        if len(self._cache) >= 256:
            self._cache.clear()
        self._cache[key] = (lists, built)
        return built
