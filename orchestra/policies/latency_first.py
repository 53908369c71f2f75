"""Latency first: the model that usually answers fastest first."""

from __future__ import annotations

from orchestra.core.model_spec import ModelSpec
from orchestra.policies._ranking import RankingPolicy


class LatencyFirstPolicy(RankingPolicy):
    """Lowest `typical_latency_ms` first; models of unknown latency after, by tier, local first.

    Unknown latency goes after every known one (a measured figure beats a guess), and among the
    unknown the tier is the proxy: no network hop is usually fastest. A request's `latency_ms`
    already removed models known to be too slow.
    """

    name = "latency_first"
    headline = "fastest first"
    pure_ranking = True

    def key(self, spec: ModelSpec) -> tuple[bool, float, int]:
        ms = spec.typical_latency_ms
        return (ms is None, ms or 0.0, spec.tier.rank)

    def why(self, spec: ModelSpec) -> str:
        ms = spec.typical_latency_ms
        return (
            f"latency unknown, {spec.tier}" if ms is None else f"typically {ms:g} ms, {spec.tier}"
        )
