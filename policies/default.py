"""The default policy: constraints, then a confidence-weighted vote, then nearest tier first."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from orchestra import ALL_TIERS, Candidate, Catalog, Decision, Exclusion, Request, Tier, Verdict
from orchestra.errors import NoAllowedModelError
from orchestra.tier import TIERS

STALE_WEIGHT = 0.5


class DefaultPolicy:
    """Constraints first, then a vote, then candidates ordered nearest the winning tier.

    1. Every tier some agent disallows is removed (the decision says which agent and why).
    2. Each agent votes for its target tier with its confidence times its weight (stale ambient
       verdicts count half); the tier with most votes wins, the cheaper tier on a tie, LOCAL when
       nobody votes.
    3. Candidates are the models of the allowed tiers, nearest the winner first (the cheaper of
       two equally near tiers first), catalog order within a tier: that is the failover chain.

    A request's `model` hint is honoured unless its tier is disallowed; a `tier` hint limits the
    candidates to that tier.
    """

    name = "default"

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        self.weights = dict(weights or {})

    def decide(self, request: Request, verdicts: Sequence[Verdict], catalog: Catalog) -> Decision:
        allowed, excluded = _constraints(verdicts)
        denied = _denied_models(verdicts, excluded)
        votes = self._votes(verdicts)
        if request.model is not None:
            return _forced_model(
                self.name, request.model, request.tier, catalog, allowed, excluded, votes, denied
            )
        usable = {t: [m for m in catalog.in_tier(t) if m.name not in denied] for t in TIERS}
        tiers = [t for t in TIERS if t in allowed and usable[t]]
        if request.tier is not None:
            tiers = [t for t in tiers if t is request.tier]
        if not tiers:
            raise NoAllowedModelError(_nothing_left(request, catalog, excluded))
        target = _winner(votes)
        ordered = sorted(tiers, key=lambda t: (t.distance(target), t.rank))
        candidates = tuple(
            Candidate(model=spec.name, tier=t, reason=_place(t, target, i))
            for t in ordered
            for i, spec in enumerate(usable[t])
        )
        return Decision(
            policy=self.name,
            candidates=candidates,
            reason=_explain(votes, target, ordered[0], excluded, request),
            target=target,
            votes=votes,
            excluded=tuple(excluded),
        )

    def _votes(self, verdicts: Sequence[Verdict]) -> dict[Tier, float]:
        votes: dict[Tier, float] = {}
        for v in verdicts:
            if v.neutral or v.target is None:
                continue
            weight = self.weights.get(v.agent, 1.0) * (STALE_WEIGHT if v.stale else 1.0)
            if v.confidence * weight <= 0:
                continue  # a zero-weight vote is no vote: it must not break the cheaper-tier tie
            votes[v.target] = round(votes.get(v.target, 0.0) + v.confidence * weight, 6)
        return votes


def _constraints(verdicts: Sequence[Verdict]) -> tuple[set[Tier], list[Exclusion]]:
    allowed = set(ALL_TIERS)
    excluded: list[Exclusion] = []
    for v in verdicts:
        if v.neutral or v.allowed == ALL_TIERS:
            continue
        for tier in sorted(ALL_TIERS - v.allowed):
            allowed.discard(tier)
            excluded.append(Exclusion(tier=tier, by=v.agent, reason=v.reason or v.state))
    return allowed, excluded


def _denied_models(verdicts: Sequence[Verdict], excluded: list[Exclusion]) -> set[str]:
    denied: set[str] = set()
    for v in verdicts:
        if v.neutral or not v.denied_models:
            continue
        for name in sorted(v.denied_models):
            denied.add(name)
            excluded.append(Exclusion(model=name, by=v.agent, reason=v.reason or v.state))
    return denied


def _winner(votes: Mapping[Tier, float]) -> Tier:
    if not votes:
        return Tier.LOCAL
    return max(votes, key=lambda t: (votes[t], -t.rank))


def _place(tier: Tier, target: Tier, index: int) -> str:
    where = "target tier" if tier is target else f"{tier.distance(target)} step(s) from {target}"
    return f"{where}, #{index + 1} in tier"


def _forced_model(
    policy: str,
    name: str,
    request_tier: Tier | None,
    catalog: Catalog,
    allowed: set[Tier],
    excluded: list[Exclusion],
    votes: dict[Tier, float],
    denied: set[str],
) -> Decision:
    spec = catalog.get(name)
    if name in denied:
        why = "; ".join(f"{e.by}: {e.reason}" for e in excluded if e.model == name)
        raise NoAllowedModelError(f"model {name!r} was requested but is denied ({why})")
    if request_tier is not None and spec.tier is not request_tier:
        raise NoAllowedModelError(
            f"model {name!r} is in tier {spec.tier}, but tier {request_tier} was requested"
        )
    if spec.tier not in allowed:
        why = "; ".join(f"{e.by}: {e.reason}" for e in excluded if e.tier is spec.tier)
        raise NoAllowedModelError(
            f"model {name!r} was requested but its tier ({spec.tier}) is disallowed ({why})"
        )
    return Decision(
        policy=policy,
        candidates=(Candidate(model=name, tier=spec.tier, reason="requested by the caller"),),
        reason=f"model {name!r} requested by the caller",
        target=spec.tier,
        votes=votes,
        excluded=tuple(excluded),
    )


def _explain(
    votes: Mapping[Tier, float],
    target: Tier,
    first: Tier,
    excluded: Sequence[Exclusion],
    request: Request,
) -> str:
    if votes:
        tally = ", ".join(f"{t} {w:.2f}" for t, w in sorted(votes.items(), key=lambda kv: kv[0]))
        parts = [f"vote for {target} ({tally})"]
    else:
        parts = ["no votes: local first"]
    if request.tier is not None:
        parts.append(f"tier {request.tier} requested")
    if first is not target:
        parts.append(f"{target} unavailable, nearest is {first}")
    if excluded:
        parts.append(
            "excluded " + ", ".join(f"{e.tier or e.model} ({e.by}: {e.reason})" for e in excluded)
        )
    return "; ".join(parts)


def _nothing_left(request: Request, catalog: Catalog, excluded: Sequence[Exclusion]) -> str:
    if not len(catalog):
        return "the catalog holds no model (enable the embedded model or add [[models]])"
    why = (
        "; ".join(f"{e.tier or e.model} by {e.by} ({e.reason})" for e in excluded)
        or "nothing excluded"
    )
    have = ", ".join(sorted(str(t) for t in catalog.tiers))
    scope = f"tier {request.tier} was requested; " if request.tier is not None else ""
    return f"no allowed model: {scope}models exist in {have}; excluded: {why}"
