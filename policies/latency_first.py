"""Latency first: the model that usually answers fastest first."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from orchestra import Catalog, Decision, Request, Verdict
from orchestra.model_spec import ModelSpec
from policies._common import (
    check_weights,
    describe_votes,
    explain,
    forced_model,
    ranked,
    require_models,
    scope,
    tally,
)


class LatencyFirstPolicy:
    """Lowest `typical_latency_ms` first; models of unknown latency after, by tier, local first.

    Unknown latency goes after every known one (a measured figure beats a guess), and among the
    unknown the tier is the proxy: no network hop is usually fastest. A request's `latency_ms`
    already removed models known to be too slow.
    """

    name = "latency_first"

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        self.weights = check_weights(weights)

    def decide(self, request: Request, verdicts: Sequence[Verdict], catalog: Catalog) -> Decision:
        sc = scope(request, verdicts, catalog)
        votes = tally(verdicts, self.weights)
        if request.model is not None:
            return forced_model(self.name, request, catalog, sc, votes)
        require_models(request, catalog, sc)
        candidates = ranked(sc.models, _key, _why)
        story = [f"fastest first: {candidates[0].model}", describe_votes(votes)]
        return Decision(
            policy=self.name,
            candidates=candidates,
            reason=explain(story, request, sc.excluded),
            target=candidates[0].tier,
            votes=votes,
            excluded=sc.excluded,
        )


def _key(spec: ModelSpec) -> tuple[int, float, int]:
    ms = spec.typical_latency_ms
    return (ms is None, ms or 0.0, spec.tier.rank)


def _why(spec: ModelSpec) -> str:
    ms = spec.typical_latency_ms
    return f"latency unknown, {spec.tier}" if ms is None else f"typically {ms:g} ms, {spec.tier}"


__all__ = ["LatencyFirstPolicy"]
