"""The Policy protocol: verdicts + catalog + request -> decision, with no I/O."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from orchestra.core.catalog import Catalog
from orchestra.core.decision import Decision
from orchestra.core.errors import OrchestraError, PolicyError
from orchestra.core.request import Request
from orchestra.core.verdict import Verdict
from orchestra.policies.constraints import enforce, labelled_right
from orchestra.policies.requested import enforce_requested


@runtime_checkable
class Policy(Protocol):
    """Fuses the agents' verdicts into a decision.

    A policy is pure: no I/O, and the same inputs give the same decision, so any stored request
    can be decided again later. It raises `NoAllowedModelError` when no model may be tried.
    """

    name: str

    def decide(
        self, request: Request, verdicts: Sequence[Verdict], catalog: Catalog
    ) -> Decision: ...


class FunctionPolicy:
    """A policy made of a plain function `(request, verdicts, catalog) -> Decision`."""

    def __init__(
        self,
        fn: Callable[[Request, Sequence[Verdict], Catalog], Decision],
        name: str | None = None,
    ) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "policy")

    def decide(self, request: Request, verdicts: Sequence[Verdict], catalog: Catalog) -> Decision:
        return self.fn(request, verdicts, catalog)


def decide_checked(
    policy: Policy, request: Request, verdicts: Sequence[Verdict], catalog: Catalog
) -> Decision:
    """Run `policy` and vouch for its answer: a bug in a policy becomes a clear `PolicyError`,
    and no candidate a verdict vetoes (`enforce`) or the request's hints rule out
    (`enforce_requested`) survives, whatever the policy returned."""
    try:
        decision = policy.decide(request, verdicts, catalog)
    except OrchestraError:
        raise
    except Exception as exc:
        raise PolicyError(f"policy {policy.name!r} raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(decision, Decision):
        raise PolicyError(
            f"policy {policy.name!r} returned {type(decision).__name__}, not a Decision"
        )
    if not decision.candidates:
        raise PolicyError(f"policy {policy.name!r} returned no candidates")
    if not labelled_right(decision, catalog):
        for candidate in decision.candidates:
            if candidate.model not in catalog:
                raise PolicyError(
                    f"policy {policy.name!r} chose {candidate.model!r}, not in the catalog"
                )
    return enforce_requested(enforce(decision, verdicts, catalog), request, catalog)
