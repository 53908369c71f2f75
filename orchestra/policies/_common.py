"""Helpers shared by the built-in policies: constraints, request hints, votes, explanations.

Every built-in policy runs the same pipeline before ordering anything: the agents' hard
constraints (disallowed tiers, denied models), then the caller's hints (capabilities, context,
latency, tier), so each policy only decides the order of what is left.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

from orchestra.core.catalog import Catalog
from orchestra.core.decision import Candidate, Decision, Exclusion
from orchestra.core.errors import NoAllowedModelError
from orchestra.core.model_spec import ModelSpec
from orchestra.core.request import Request
from orchestra.core.tier import ALL_TIERS, TIERS, Tier
from orchestra.core.trusted import trusted
from orchestra.core.verdict import Verdict
from orchestra.policies.constraints import constraints, denied_models, exclusion
from orchestra.policies.requested import REQUEST, unmet_hint

STALE_WEIGHT = 0.5


@dataclass(frozen=True)
class Scope:
    """What the constraints and hints leave: usable models per tier, and what was removed why."""

    allowed: frozenset[Tier]
    denied: frozenset[str]
    excluded: tuple[Exclusion, ...]
    usable: Mapping[Tier, tuple[ModelSpec, ...]]

    @cached_property
    def tiers(self) -> list[Tier]:
        """Tiers that still hold a usable model, cheapest first."""
        return [t for t in TIERS if self.usable.get(t)]

    @property
    def models(self) -> list[ModelSpec]:
        """Usable models, by tier then catalog order (the stable base every sort starts from)."""
        return [m for t in self.tiers for m in self.usable[t]]


# -- constraints and hints ---------------------------------------------------------------------


def scope(
    request: Request,
    verdicts: Sequence[Verdict],
    catalog: Catalog,
    limits: Iterable[Exclusion] = (),
) -> Scope:
    """Apply verdict constraints, a policy's own tier `limits`, then the request's hints.

    Without hints (the usual case), a scope depends only on the catalog, the tier hint, the
    limits and what the constraining verdicts say (agent, allowed tiers, denied models, reason):
    such scopes are built once and shared (they are immutable)."""
    if request.capabilities or request.min_context is not None or request.latency_ms is not None:
        return _scope(request, verdicts, catalog, limits)
    says = []
    for v in verdicts:
        if not v.neutral and (v.denied_models or v.allowed != ALL_TIERS):
            says.append((v.agent, v.allowed, v.denied_models, v.reason or v.state))
    key = (id(catalog), request.tier, tuple(limits), tuple(says))
    found = _SCOPES.get(key)
    if found is not None:
        return found[1]
    built = _scope(request, verdicts, catalog, key[2])
    if len(_SCOPES) >= _MAX_SCOPES:
        _SCOPES.clear()
    _SCOPES[key] = (catalog, built)  # keeps the catalog alive: its identity is not reused
    return built


_SCOPES: dict[tuple[Any, ...], tuple[Catalog, Scope]] = {}
_MAX_SCOPES = 4096


def _scope(
    request: Request,
    verdicts: Sequence[Verdict],
    catalog: Catalog,
    limits: Iterable[Exclusion],
) -> Scope:
    allowed, excluded = constraints(verdicts)
    for limit in limits:
        if limit.tier is not None and limit.tier in allowed:
            allowed.discard(limit.tier)
            excluded.append(limit)
    denied = denied_models(verdicts, excluded)
    hinted = (
        bool(request.capabilities)
        or request.min_context is not None
        or (request.latency_ms is not None)
    )
    usable: dict[Tier, tuple[ModelSpec, ...]] = {}
    for tier in TIERS:
        if tier not in allowed or (request.tier is not None and tier is not request.tier):
            continue
        if not hinted:  # the usual case: the catalog's own tuple, or one shared per denial set
            specs = catalog.in_tier(tier)
            usable[tier] = _without(specs, denied) if denied else specs
            continue
        keep: list[ModelSpec] = []
        for spec in catalog.in_tier(tier):
            if spec.name in denied:
                continue
            why = unmet_hint(spec, request)
            if why is None:
                keep.append(spec)
            else:
                excluded.append(exclusion(None, spec.name, REQUEST, why))
        usable[tier] = tuple(keep)
    return Scope(frozenset(allowed), frozenset(denied), tuple(excluded), usable)


def _without(specs: tuple[ModelSpec, ...], denied: set[str]) -> tuple[ModelSpec, ...]:
    """`specs` less the denied models: the same tuple object for the same (specs, denial set), so
    what is built from it once (`by_tier`) is found again. Keyed by identity; the entry keeps
    `specs` alive, so an identity is never reused while it is cached."""
    key = (id(specs), frozenset(denied))
    found = _WITHOUT.get(key)
    if found is not None:
        return found[1]
    kept = tuple(s for s in specs if s.name not in denied)
    if len(_WITHOUT) >= _MAX_WITHOUT:
        _WITHOUT.clear()
    _WITHOUT[key] = (specs, kept)
    return kept


_WITHOUT: dict[tuple[int, frozenset[str]], tuple[tuple[ModelSpec, ...], tuple[ModelSpec, ...]]] = {}
_MAX_WITHOUT = 1024


class Route(NamedTuple):
    """A decision before it is explained: the target tier and the failover chain, as `decide`
    would give them (what replay needs, without the reason, votes and exclusions)."""

    target: Tier | None
    candidates: tuple[Candidate, ...]


def opening(
    weights: Mapping[str, float],
    request: Request,
    verdicts: Sequence[Verdict],
    catalog: Catalog,
) -> tuple[Scope, dict[Tier, float], ModelSpec | None]:
    """What every built-in policy does first: the scope left by constraints and hints, the
    weighted votes, and the model the request forces, if it does and may (see `forced_spec`)."""
    sc = scope(request, verdicts, catalog)
    votes = tally(verdicts, weights)
    if request.model is not None:
        return sc, votes, forced_spec(request, catalog, sc)
    return sc, votes, None


def require_models(request: Request, catalog: Catalog, sc: Scope) -> None:
    """Raise `NoAllowedModelError`, saying who excluded what, when nothing is usable."""
    if not sc.tiers:
        raise NoAllowedModelError(
            nothing_left(request, catalog, sc.excluded), by={e.by for e in sc.excluded}
        )


def nothing_left(request: Request, catalog: Catalog, excluded: Sequence[Exclusion]) -> str:
    if not len(catalog):
        return "the catalog holds no model (enable the embedded model or add [[models]])"
    why = (
        "; ".join(f"{e.tier or e.model} by {e.by} ({e.reason})" for e in excluded)
        or "nothing excluded"
    )
    have = ", ".join(sorted(str(t) for t in catalog.tiers))
    scope_ = f"tier {request.tier} was requested; " if request.tier is not None else ""
    return f"no allowed model: {scope_}models exist in {have}; excluded: {why}"


# -- the model override ------------------------------------------------------------------------


def forced_spec(request: Request, catalog: Catalog, sc: Scope) -> ModelSpec:
    """The model `request.model` forces, unless a constraint forbids it; the refusal
    (`NoAllowedModelError`) names who forbids it."""
    name = request.model
    assert name is not None
    spec = catalog.get(name)  # UnknownModelError lists the catalog
    if name in sc.denied:
        why = "; ".join(f"{e.by}: {e.reason}" for e in sc.excluded if e.model == name)
        raise NoAllowedModelError(f"model {name!r} was requested but is denied ({why})")
    if request.tier is not None and spec.tier is not request.tier:
        raise NoAllowedModelError(
            f"model {name!r} is in tier {spec.tier}, but tier {request.tier} was requested"
        )
    if spec.tier not in sc.allowed:
        why = "; ".join(f"{e.by}: {e.reason}" for e in sc.excluded if e.tier is spec.tier)
        raise NoAllowedModelError(
            f"model {name!r} was requested but its tier ({spec.tier}) is disallowed ({why})"
        )
    # A model that cannot do what the request needs would fail anyway; latency is only an
    # estimate, so an explicit choice overrides it.
    unmet = unmet_hint(spec, request, latency=False)
    if unmet is not None:
        raise NoAllowedModelError(f"model {name!r} was requested but {unmet} ({REQUEST})")
    return spec


def forced_route(spec: ModelSpec) -> Route:
    """The route to a model the caller forced (`forced_spec`); built once per model."""
    key = (spec.name, spec.tier)
    found = _FORCED.get(key)
    if found is None:
        if len(_FORCED) >= _MAX_CANDIDATES:
            _FORCED.clear()
        found = _FORCED[key] = Route(spec.tier, (candidate(spec.name, spec.tier, REQUESTED),))
    return found


_FORCED: dict[tuple[str, Tier], Route] = {}


def forced_decision(policy: str, spec: ModelSpec, sc: Scope, votes: dict[Tier, float]) -> Decision:
    """The decision for a model the caller forced (`forced_spec`)."""
    return decision(
        policy, forced_route(spec), f"model {spec.name!r} requested by the caller", votes, sc
    )


def forced_model(
    policy: str, request: Request, catalog: Catalog, sc: Scope, votes: dict[Tier, float]
) -> Decision:
    """Honour `request.model` unless a constraint forbids it; the refusal names who forbids it."""
    return forced_decision(policy, forced_spec(request, catalog, sc), sc, votes)


REQUESTED = "requested by the caller"
_DECISION_FIELDS = frozenset(Decision.model_fields)


def decision(
    policy: str, route: Route, reason: str, votes: dict[Tier, float], sc: Scope
) -> Decision:
    """A built-in policy's decision (of known-valid parts: built without validation)."""
    values = {
        "policy": policy,
        "candidates": route.candidates,
        "reason": reason,
        "target": route.target,
        "votes": votes,
        "excluded": sc.excluded,
    }
    return trusted(Decision, values, _DECISION_FIELDS)


# -- votes and ordering ------------------------------------------------------------------------


def is_number(value: object) -> bool:
    """A real int or float from config (TOML booleans are not numbers here)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    """A private copy of per-agent vote weights; ValueError on a negative or non-number weight."""
    out: dict[str, float] = {}
    for agent, w in dict(weights or {}).items():
        if not is_number(w) or w < 0:
            raise ValueError(f"weight for {agent!r} must be a number >= 0, got {w!r}")
        out[str(agent)] = float(w)
    return out


def tally(verdicts: Sequence[Verdict], weights: Mapping[str, float]) -> dict[Tier, float]:
    """Confidence x weight per target tier; stale verdicts count half, neutral ones not at all."""
    votes: dict[Tier, float] = {}
    for v in verdicts:
        target = v.target
        if target is None or v.neutral:
            continue
        weight = weights.get(v.agent, 1.0)
        if v.stale:
            weight *= STALE_WEIGHT
        vote = v.confidence * weight
        if vote <= 0:
            continue  # a zero-weight vote is no vote: it must not break the cheaper-tier tie
        votes[target] = round(votes.get(target, 0.0) + vote, 6)
    return votes


def winner(votes: Mapping[Tier, float]) -> Tier:
    """The tier with most votes, the cheaper on a tie, LOCAL when nobody votes."""
    if not votes:
        return Tier.LOCAL
    return max(votes, key=lambda t: (votes[t], -t.rank))


def nearest_first(tiers: Iterable[Tier], target: Tier) -> list[Tier]:
    """Tiers nearest `target` first, the cheaper of two equally near tiers first."""
    key = (tuple(tiers), target)
    found = _NEAREST.get(key)
    if found is None:
        found = tuple(sorted(key[0], key=lambda t: (t.distance(target), t.rank)))
        if len(_NEAREST) < 256:  # 3 targets x the ordered subsets of three tiers
            _NEAREST[key] = found
    return list(found)


_NEAREST: dict[tuple[tuple[Tier, ...], Tier], tuple[Tier, ...]] = {}


def place(tier: Tier, target: Tier, index: int) -> str:
    return f"{_WHERE[tier, target]}, #{index + 1} in tier"


_WHERE = {
    (t, target): "target tier" if t is target else f"{t.distance(target)} step(s) from {target}"
    for t in TIERS
    for target in TIERS
}


def by_tier(sc: Scope, order: Sequence[Tier], target: Tier) -> tuple[Candidate, ...]:
    """Candidates tier by tier in `order`, catalog order within a tier."""
    tiers = tuple(order)
    lists = tuple(sc.usable[t] for t in tiers)
    # The same usable lists (most often the catalog's own tuples) in the same order give the
    # same candidates: built once. Keyed by identity; the entry keeps the lists alive, so an
    # identity is never reused while it is cached.
    key = (tiers, target, tuple(map(id, lists)))
    found = _BY_TIER.get(key)
    if found is not None:
        return found[1]
    built = tuple(
        candidate(spec.name, t, place(t, target, i))
        for t, specs in zip(tiers, lists, strict=True)
        for i, spec in enumerate(specs)
    )
    if len(_BY_TIER) >= _MAX_BY_TIER:
        _BY_TIER.clear()
    _BY_TIER[key] = (lists, built)
    return built


_BY_TIER: dict[tuple[Any, ...], tuple[tuple[Any, ...], tuple[Candidate, ...]]] = {}
_MAX_BY_TIER = 1024


_CANDIDATE_FIELDS = frozenset(("model", "tier", "reason"))
# Candidates are immutable and a catalog's few thousand (model, place) pairs repeat on every
# request: each is built once. Bounded: cleared when it grows past what any catalog explains.
_CANDIDATES: dict[tuple[str, Tier, str], Candidate] = {}
_MAX_CANDIDATES = 100_000


def candidate(model: str, tier: Tier, reason: str) -> Candidate:
    """A candidate from a catalog model (known valid: built without validation, once)."""
    key = (model, tier, reason)
    found = _CANDIDATES.get(key)
    if found is None:
        if len(_CANDIDATES) >= _MAX_CANDIDATES:
            _CANDIDATES.clear()
        found = _CANDIDATES[key] = trusted(
            Candidate, {"model": model, "tier": tier, "reason": reason}, _CANDIDATE_FIELDS
        )
    return found


def ranked(
    specs: Sequence[ModelSpec],
    key: Callable[[ModelSpec], tuple[Any, ...]],
    why: Callable[[ModelSpec], str],
) -> tuple[Candidate, ...]:
    """Candidates sorted by `key` (stable, so ties keep tier then catalog order), each with why."""
    ordered = sorted(specs, key=key)
    return tuple(candidate(s.name, s.tier, f"#{i + 1}: {why(s)}") for i, s in enumerate(ordered))


# -- explanations ------------------------------------------------------------------------------


def describe_votes(votes: Mapping[Tier, float]) -> str:
    if not votes:
        return "no votes"
    tally_ = ", ".join(f"{t} {w:.2f}" for t, w in sorted(votes.items(), key=lambda kv: kv[0]))
    return f"votes {tally_}"


def explain(parts: Sequence[str], request: Request, excluded: Sequence[Exclusion]) -> str:
    """`parts` (the policy's own story), then the tier hint and who excluded what."""
    out = list(parts)
    if request.tier is not None:
        out.append(f"tier {request.tier} requested")
    if excluded:
        out.append(
            "excluded " + ", ".join(f"{e.tier or e.model} ({e.by}: {e.reason})" for e in excluded)
        )
    return "; ".join(out)


def parse_tier(value: object, what: str) -> Tier:
    """A tier from config text; ValueError naming `what` and the valid values otherwise."""
    try:
        return Tier(str(value).lower())
    except ValueError:
        valid = ", ".join(t.value for t in TIERS)
        raise ValueError(f"{what} must be one of {valid}, got {value!r}") from None
