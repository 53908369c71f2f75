"""Matrix: a routing table from config; the first rule whose conditions all hold picks the tier.

[policy]
name = "matrix"
[[policy.rules]]
complexity = "high"
tier = "cloud"
[[policy.rules]]
budget = "none"
tier = "local"
[[policy.rules]]
tier = "edge"          # no condition: the default
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestra.core.catalog import Catalog
from orchestra.core.decision import Decision
from orchestra.core.request import Request
from orchestra.core.tier import Tier
from orchestra.core.verdict import Verdict
from orchestra.policies._common import (
    Route,
    Scope,
    by_tier,
    check_weights,
    decision,
    describe_votes,
    explain,
    forced_decision,
    forced_route,
    is_number,
    nearest_first,
    opening,
    parse_tier,
    require_models,
)
from orchestra.policies.constraints import exclusion

# The condition vocabulary: each key and the values a rule may ask for.
CONDITIONS: dict[str, tuple[str, ...]] = {
    "complexity": ("low", "medium", "high"),
    "latency": ("low", "normal"),
    "budget": ("normal", "tight", "none"),
}
# The cost agent's states, as budget levels (unknown states read as "normal").
BUDGET_STATES = {
    "ok": "normal",
    "no_budget": "normal",
    "alert": "tight",
    "spike": "tight",
    "over_budget": "none",
}
DEFAULT_RULES: tuple[dict[str, Any], ...] = (
    {"complexity": "high", "tier": "cloud"},
    {"complexity": "medium", "tier": "edge"},
    {"tier": "local"},
)


@dataclass(frozen=True)
class Rule:
    """Conditions (all must hold) -> a tier, and optionally a cap on the model size."""

    index: int
    when: Mapping[str, str]
    tier: Tier
    max_size_mb: float | None = None

    def describe(self) -> str:
        cond = " and ".join(f"{k}={v}" for k, v in self.when.items()) or "default"
        return f"rule #{self.index + 1} ({cond} -> {self.tier})"


def parse_rule(index: int, raw: object) -> Rule:
    """One `[[policy.rules]]` table as a Rule; ValueError naming the rule and what is wrong."""
    where = f"rule #{index + 1}"
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where} must be a table, got {type(raw).__name__}")
    unknown = set(raw) - set(CONDITIONS) - {"tier", "max_size_mb"}
    if unknown:
        known = ", ".join([*CONDITIONS, "tier", "max_size_mb"])
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: {known}")
    if "tier" not in raw:
        raise ValueError(f"{where} needs a tier")
    when: dict[str, str] = {}
    for key, values in CONDITIONS.items():
        if key in raw:
            if raw[key] not in values:
                raise ValueError(f"{where}: {key} must be one of {', '.join(values)}")
            when[key] = raw[key]
    size = raw.get("max_size_mb")
    if size is not None and (
        isinstance(size, bool) or not isinstance(size, int | float) or size <= 0
    ):
        raise ValueError(f"{where}: max_size_mb must be a number > 0, got {size!r}")
    tier = parse_tier(raw["tier"], f"{where}: tier")
    return Rule(index, when, tier, None if size is None else float(size))


class MatrixPolicy:
    """A routing table: conditions read from verdicts and hints pick a tier; nearest tier first.

    Conditions: `complexity` (the complexity agent's `metrics.score`: low < `medium_from` <=
    medium < `high_from` <= high; unknown without a score), `latency` (low when the request asks
    for at most `low_latency_ms`, else normal), `budget` (the cost agent's state: ok/no_budget
    normal, alert/spike tight, over_budget none). The first rule whose conditions all hold wins;
    a rule without conditions is the default; with no match the target is LOCAL. A rule's
    `max_size_mb` removes models known to be larger.
    """

    name = "matrix"

    def __init__(
        self,
        rules: Sequence[Mapping[str, Any]] | None = None,
        medium_from: float = 0.5,
        high_from: float = 0.65,
        low_latency_ms: float = 1000.0,
        complexity_agent: str = "complexity",
        cost_agent: str = "cost",
        weights: Mapping[str, float] | None = None,
    ) -> None:
        if not (is_number(medium_from) and is_number(high_from)) or not (
            0.0 <= medium_from <= high_from <= 1.0
        ):
            raise ValueError("need 0 <= medium_from <= high_from <= 1")
        if not is_number(low_latency_ms) or low_latency_ms <= 0:
            raise ValueError(f"low_latency_ms must be > 0, got {low_latency_ms!r}")
        for what, agent in (("complexity_agent", complexity_agent), ("cost_agent", cost_agent)):
            if not isinstance(agent, str) or not agent:
                raise ValueError(f"{what} must be a non-empty string, got {agent!r}")
        raw = DEFAULT_RULES if rules is None else rules
        if isinstance(raw, str | bytes | Mapping):
            raise ValueError("rules must be a list of tables ([[policy.rules]])")
        self.rules = tuple(parse_rule(i, r) for i, r in enumerate(raw))
        self.medium_from, self.high_from = float(medium_from), float(high_from)
        self.low_latency_ms = float(low_latency_ms)
        self.complexity_agent, self.cost_agent = complexity_agent, cost_agent
        self.weights = check_weights(weights)

    def decide(self, request: Request, verdicts: Sequence[Verdict], catalog: Catalog) -> Decision:
        sc, votes, forced = opening(self.weights, request, verdicts, catalog)
        if forced is not None:
            return forced_decision(self.name, forced, sc, votes)
        facts = self.facts(request, verdicts)
        rule = self.rule(facts)
        route, sc = self._route(request, catalog, sc, rule)
        target = route.target
        known = ", ".join(f"{k}={v}" for k, v in facts.items())
        story = [
            f"{known}: " + (rule.describe() if rule else f"no rule matched -> {target}"),
            describe_votes(votes),
        ]
        if route.candidates[0].tier is not target:
            story.append(f"{target} unavailable, nearest is {route.candidates[0].tier}")
        return decision(self.name, route, explain(story, request, sc.excluded), votes, sc)

    def route(self, request: Request, verdicts: Sequence[Verdict], catalog: Catalog) -> Route:
        """`decide`'s target and candidates, without its explanation."""
        sc, _, forced = opening(self.weights, request, verdicts, catalog)
        if forced is not None:
            return forced_route(forced)
        rule = self.rule(self.facts(request, verdicts))
        return self._route(request, catalog, sc, rule)[0]

    def rule(self, facts: Mapping[str, str]) -> Rule | None:
        """The first rule whose conditions `facts` meet (None: no rule matches)."""
        return next((r for r in self.rules if _matches(r, facts)), None)

    def _route(
        self, request: Request, catalog: Catalog, sc: Scope, rule: Rule | None
    ) -> tuple[Route, Scope]:
        """The route `rule` gives, and the scope left once its size cap applies."""
        target = Tier.LOCAL if rule is None else rule.tier
        if rule is not None and rule.max_size_mb is not None:
            sc = self._cap_size(sc, rule)
        require_models(request, catalog, sc)
        return Route(target, by_tier(sc, nearest_first(sc.tiers, target), target)), sc

    def facts(self, request: Request, verdicts: Sequence[Verdict]) -> dict[str, str]:
        """The condition values for this request (pure; 'unknown' when no agent says)."""
        facts = {"complexity": "unknown", "budget": "normal"}
        for v in verdicts:
            if v.neutral:
                continue
            if v.agent == self.complexity_agent and isinstance(v.metrics.get("score"), int | float):
                facts["complexity"] = self.complexity_level(float(v.metrics["score"]))
            elif v.agent == self.cost_agent:
                facts["budget"] = BUDGET_STATES.get(v.state, "normal")
        low = request.latency_ms is not None and request.latency_ms <= self.low_latency_ms
        facts["latency"] = "low" if low else "normal"
        return facts

    def complexity_level(self, score: float) -> str:
        if score < self.medium_from:
            return "low"
        return "medium" if score < self.high_from else "high"

    def _cap_size(self, sc: Scope, rule: Rule) -> Scope:
        cap = rule.max_size_mb
        assert cap is not None
        too_big = {m.name for m in sc.models if m.size_mb is not None and m.size_mb > cap}
        if not too_big:
            return sc
        why = f"size over {cap:g} MB ({rule.describe()})"
        extra = tuple(exclusion(None, n, self.name, why) for n in sorted(too_big))
        usable = {t: tuple(m for m in ms if m.name not in too_big) for t, ms in sc.usable.items()}
        return Scope(sc.allowed, sc.denied, sc.excluded + extra, usable)


def _matches(rule: Rule, facts: Mapping[str, str]) -> bool:
    return all(facts.get(k) == v for k, v in rule.when.items())


__all__ = ["BUDGET_STATES", "CONDITIONS", "DEFAULT_RULES", "MatrixPolicy", "Rule", "parse_rule"]
