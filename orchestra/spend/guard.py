"""Reserves a request's estimated cost before a paid call, so concurrent calls cannot overspend."""

from __future__ import annotations

from dataclasses import dataclass

from orchestra.core.errors import ProviderError
from orchestra.core.model_spec import ModelSpec
from orchestra.core.request import Request
from orchestra.spend.budget import Budget
from orchestra.spend.estimate import estimate_usd
from orchestra.spend.tracker import SpendTracker


@dataclass(frozen=True)
class Hold:
    """A reservation of budget for one call; released when the call ends."""

    usd: float


class BudgetGuard:
    """Checks and reserves in one step on the event loop (no await between them), so 200 requests
    arriving at once see each other's reservations. Spent + reserved never exceeds a budget.

    A call's reservation is its estimate; when it ends the reservation is released and the real
    cost is added to the spend by the runtime.
    """

    def __init__(self, budget: Budget, spend: SpendTracker, expected_completion: int = 256) -> None:
        self.budget = budget
        self.spend = spend
        self.expected_completion = expected_completion

    def hold(self, spec: ModelSpec, request: Request) -> Hold | None:
        """Reserve the estimated cost on `spec`; None for a free model or no budget.

        Raises `ProviderError(kind="budget")` when the estimate would overrun a budget.
        """
        if spec.is_free or (self.budget.daily_usd is None and self.budget.monthly_usd is None):
            return None
        estimate = estimate_usd(spec, request, self.expected_completion)
        if estimate is None:
            return None  # unknown price: nothing to reserve against (the cost agent says so)
        for label, limit, spent in (
            ("daily", self.budget.daily_usd, self.spend.today()),
            ("monthly", self.budget.monthly_usd, self.spend.this_month()),
        ):
            if limit is not None and spent + self.spend.reserved_usd + estimate > limit:
                left = max(0.0, limit - spent - self.spend.reserved_usd)
                raise ProviderError(
                    f"{spec.name}: estimated ${estimate:.6f} would overrun the {label} budget "
                    f"(${left:.6f} left)",
                    kind="budget",
                    model=spec.name,
                )
        self.spend.reserved_usd += estimate
        return Hold(estimate)

    def release(self, hold: Hold | None) -> None:
        if hold is not None:
            self.spend.reserved_usd = max(0.0, self.spend.reserved_usd - hold.usd)
