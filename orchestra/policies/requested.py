"""What the caller asked for binds every policy, as a veto does: the model it forces, the tier,
the capabilities and the context it needs, the latency it allows. The built-in policies plan
within these hints; `enforce_requested` holds any other policy to them."""

from __future__ import annotations

from orchestra.core.catalog import Catalog
from orchestra.core.decision import Candidate, Decision, Exclusion
from orchestra.core.model_spec import ModelSpec
from orchestra.core.request import Request
from orchestra.core.tier import Tier
from orchestra.core.trusted import trusted
from orchestra.policies.constraints import pruned

REQUEST = "request"  # `Exclusion.by` for models the caller's hints rule out
_EXCLUSION_FIELDS = frozenset(("tier", "model", "by", "reason"))


def unmet_hint(spec: ModelSpec, request: Request, *, latency: bool = True) -> str | None:
    """Why `spec` cannot serve `request` (capabilities, context, latency), or None if it can."""
    missing = request.capabilities - spec.capabilities
    if missing:
        return f"lacks {', '.join(sorted(missing))}"
    if request.min_context is not None and spec.context_window < request.min_context:
        return f"context {spec.context_window} < {request.min_context} tokens needed"
    limit, typical = request.latency_ms, spec.typical_latency_ms
    # Unknown latency is allowed: we only exclude what we know to be too slow.
    if latency and limit is not None and typical is not None and typical > limit:
        return f"typical latency {typical:g} ms > {limit:g} ms allowed"
    return None


def _hinted(request: Request) -> bool:
    return (
        request.model is not None
        or request.tier is not None
        or bool(request.capabilities)
        or request.min_context is not None
        or request.latency_ms is not None
    )


def _unmet(spec: ModelSpec, request: Request) -> str | None:
    if request.model is not None and spec.name != request.model:
        return f"model {request.model!r} was requested"
    if request.tier is not None and spec.tier is not request.tier:
        return f"tier {request.tier} was requested"
    # A model the caller forces is not held to a latency it also gave (as the built-ins do).
    return unmet_hint(spec, request, latency=request.model is None)


def enforce_requested(decision: Decision, request: Request, catalog: Catalog) -> Decision:
    """`decision` without the candidates the request's hints rule out, each removal recorded.

    Raises `NoAllowedModelError` when none is left."""
    if not _hinted(request):
        return decision
    kept: list[Candidate] = []
    removed: list[Exclusion] = []
    for c in decision.candidates:
        spec = catalog.get(c.model)
        why = _unmet(spec, request)
        if why is None:
            kept.append(c)
        else:
            removed.append(_removed(spec.name, spec.tier, why))
    if not removed:
        return decision
    return pruned(decision, kept, removed, "none the request allows")


def _removed(model: str, tier: Tier, why: str) -> Exclusion:
    values = {"tier": tier, "model": model, "by": REQUEST, "reason": f"{model}: {why}"}
    return trusted(Exclusion, values, _EXCLUSION_FIELDS)
