"""Hard constraints: tiers a verdict disallows and models it denies. They belong to the runtime:
whatever a policy returns, `enforce` removes what a veto forbids, and says who forbade it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from orchestra.core.catalog import Catalog
from orchestra.core.decision import Candidate, Decision, Exclusion
from orchestra.core.errors import NoAllowedModelError
from orchestra.core.tier import ALL_TIERS, TIERS, Tier
from orchestra.core.trusted import trusted
from orchestra.core.verdict import Verdict

RUNTIME = "runtime"
_EXCLUSION_FIELDS = frozenset(("tier", "model", "by", "reason"))
# Exclusions are immutable and the same few (agent, tier, reason) repeat on every request: each
# is built once. Bounded: cleared when it grows past what any set of agents says.
_EXCLUSIONS: dict[tuple[Tier | None, str | None, str, str], Exclusion] = {}
_MAX_EXCLUSIONS = 100_000
# The tiers a verdict's `allowed` leaves out, in tier order, per distinct `allowed`.
_OUTSIDE: dict[frozenset[Tier], tuple[Tier, ...]] = {}


def exclusion(tier: Tier | None, model: str | None, by: str, reason: str) -> Exclusion:
    """An exclusion (of known-valid parts: built without validation, once)."""
    key = (tier, model, by, reason)
    found = _EXCLUSIONS.get(key)
    if found is None:
        if len(_EXCLUSIONS) >= _MAX_EXCLUSIONS:
            _EXCLUSIONS.clear()
        values = {"tier": tier, "model": model, "by": by, "reason": reason}
        found = _EXCLUSIONS[key] = trusted(Exclusion, values, _EXCLUSION_FIELDS)
    return found


def _outside(allowed: frozenset[Tier]) -> tuple[Tier, ...]:
    found = _OUTSIDE.get(allowed)
    if found is None:
        found = tuple(t for t in TIERS if t not in allowed)
        if len(_OUTSIDE) < 64:  # at most 8 subsets of the three tiers; anything else is odd
            _OUTSIDE[allowed] = found
    return found


def constraints(verdicts: Sequence[Verdict]) -> tuple[set[Tier], list[Exclusion]]:
    """Tiers no non-neutral verdict disallows, and an exclusion per (agent, tier) removed."""
    allowed = set(ALL_TIERS)
    excluded: list[Exclusion] = []
    for v in verdicts:
        if v.neutral or v.allowed == ALL_TIERS:
            continue
        for tier in _outside(v.allowed):
            allowed.discard(tier)
            excluded.append(exclusion(tier, None, v.agent, v.reason or v.state))
    return allowed, excluded


def denied_models(verdicts: Sequence[Verdict], excluded: list[Exclusion]) -> set[str]:
    """Models some non-neutral verdict denies; each denial is appended to `excluded`."""
    denied: set[str] = set()
    for v in verdicts:
        if v.neutral or not v.denied_models:
            continue
        for name in sorted(v.denied_models):
            denied.add(name)
            excluded.append(exclusion(None, name, v.agent, v.reason or v.state))
    return denied


def enforce(decision: Decision, verdicts: Sequence[Verdict], catalog: Catalog) -> Decision:
    """`decision` without the candidates a verdict vetoes (judged by the catalog's tier of each
    model, not the tier the policy wrote), each removal recorded as an exclusion by the runtime.

    Raises `NoAllowedModelError`, naming the vetoes, when none is left.
    """
    allowed, tier_vetoes = constraints(verdicts)
    model_vetoes: list[Exclusion] = []
    denied = denied_models(verdicts, model_vetoes)
    if not denied and len(allowed) == len(ALL_TIERS) and labelled_right(decision, catalog):
        return decision  # no veto, and every candidate is what the catalog says it is
    kept: list[Candidate] = []
    removed: list[Exclusion] = []
    vetoers: set[str] = set()
    relabelled = False
    for c in decision.candidates:
        tier = catalog.get(c.model).tier
        if tier not in allowed:
            agents = [e.by for e in tier_vetoes if e.tier is tier]
            removed.append(_removed(c.model, tier, f"{tier} is disallowed by {', '.join(agents)}"))
            vetoers.update(agents)
        elif c.model in denied:
            agents = [e.by for e in model_vetoes if e.model == c.model]
            removed.append(_removed(c.model, tier, f"denied by {', '.join(agents)}"))
            vetoers.update(agents)
        elif c.tier is not tier:  # a policy cannot pass a cloud model off as a local one
            kept.append(c.model_copy(update={"tier": tier}))
            relabelled = True
        else:
            kept.append(c)
    if not removed and not relabelled:
        return decision
    return pruned(decision, kept, removed, "only vetoed models", by=vetoers)


def pruned(
    decision: Decision,
    kept: list[Candidate],
    removed: list[Exclusion],
    chose: str,
    *,
    by: Iterable[str] = (),
) -> Decision:
    """`decision` with `kept` as its candidates and `removed` added to its exclusions; with
    none kept, `NoAllowedModelError` saying the policy `chose` nothing else, and why (`by`: the
    agents whose vetoes removed them)."""
    if not kept:
        why = "; ".join(e.reason for e in removed)
        raise NoAllowedModelError(
            f"no allowed model: policy {decision.policy!r} chose {chose} ({why})", by=by
        )
    return decision.model_copy(
        update={"candidates": tuple(kept), "excluded": (*decision.excluded, *removed)}
    )


def _removed(model: str, tier: Tier, reason: str) -> Exclusion:
    return Exclusion(model=model, tier=tier, by=RUNTIME, reason=f"{model}: {reason}")


# Candidate lists found right against a catalog, by (first candidate's id, length): the built-in
# policies hand out the same candidate objects for the same lists, so a long catalog is walked
# once per list, not on every request. Each entry holds its candidates (their ids stay theirs),
# and a hit is confirmed by comparing the lists (item by item, identity first: C speed).
_RIGHT: dict[tuple[int, int], tuple[tuple[Candidate, ...], Catalog]] = {}
_RIGHT_MAX = 256


def labelled_right(decision: Decision, catalog: Catalog) -> bool:
    """Every candidate of `decision` is a model of `catalog`, labelled with its catalog tier."""
    candidates = decision.candidates
    if not candidates:
        return True
    key = (id(candidates[0]), len(candidates))
    seen = _RIGHT.get(key)
    if seen is not None and seen[1] is catalog and seen[0] == candidates:
        return True
    for c in candidates:
        if c.model not in catalog or catalog.get(c.model).tier is not c.tier:
            return False
    if len(_RIGHT) >= _RIGHT_MAX:
        _RIGHT.clear()
    _RIGHT[key] = (tuple(candidates), catalog)
    return True
