"""The cost agent: can we afford this request, and on which models?"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from orchestra.agents.base import Agent
from orchestra.agents.context import AgentContext
from orchestra.core.catalog import Catalog
from orchestra.core.request import Request
from orchestra.core.tier import ALL_TIERS, Tier
from orchestra.core.verdict import Verdict
from orchestra.spend.budget import Budget
from orchestra.spend.estimate import (
    TOKENS_PER_MESSAGE,
    completion_tokens,
    cost_usd,
    count_tokens,
    prompt_tokens,
)
from orchestra.spend.tracker import SpendTracker


class CostAgent(Agent):
    """Compares spend (the store's ledger, kept live in memory) with the daily and monthly budget.

    Per request it estimates the cost on every catalog model (prompt tokens counted locally, the
    expected answer length, the catalog's prices) and denies each model whose estimate would
    overrun what is left of a budget, counting calls in flight (their reservations). A tier whose
    every model is denied is disallowed. States: `no_budget`, `ok`, `alert` (past `alert_share`
    of a budget: votes local), `spike` (the last hour cost over `spike_factor` times the month's
    hourly average: votes local), `over_budget` (nothing paid can be afforded).
    """

    name = "cost"

    def __init__(self, expected_completion_tokens: int = 256, spike_factor: float = 3.0) -> None:
        if expected_completion_tokens <= 0:
            raise ValueError("expected_completion_tokens must be > 0")
        if spike_factor <= 1.0:
            raise ValueError("spike_factor must be > 1")
        self.expected_completion = expected_completion_tokens
        self.spike_factor = spike_factor
        self._budget = Budget()
        self._spend = SpendTracker.seeded(0.0, 0.0)
        self._catalog = Catalog(())
        self._top_for: Catalog | None = None
        self._top = (0.0, 0.0)
        self._system: dict[str, int] = {}

    async def start(self, context: AgentContext) -> None:
        self._budget = context.budget
        self._spend = context.spend
        self._catalog = context.catalog

    async def catalog_changed(self, context: AgentContext) -> None:
        self._catalog = context.catalog

    async def check(self, request: Request | None) -> Verdict:
        now = time.time()
        today, month = self._spend.today(now), self._spend.this_month(now)
        reserved = self._spend.reserved_usd
        left = _left(self._budget, today + reserved, month + reserved)
        estimates: dict[str, float | None] = {}
        if request is not None and left is not None:  # no budget: nothing to weigh them against
            estimates = self._estimates(request, left)
        return self.judge(
            today=today,
            month=month,
            reserved=reserved,
            last_hour=self._spend.last_hour(now),
            hours_this_month=max(1.0, (now - self._spend.calendar.month_start(now)) / 3600),
            estimates=estimates,
        )

    def _estimates(self, request: Request, left: float) -> dict[str, float | None]:
        """Each model's estimated cost, or none at all when even the dearest prices (input and
        output, maybe of two models) fit in what is left: then no model is denied, and a long
        catalog is not priced one model at a time on every request."""
        prompt = prompt_tokens(request)
        answer = completion_tokens(request, self.expected_completion)
        top_in, top_out = self._top_prices
        # A model's own system prompt is sent too, unless the request has one of its own.
        own = {} if any(m.role == "system" for m in request.messages) else self._system_tokens
        if ((prompt + max(own.values(), default=0)) * top_in + answer * top_out) / 1e6 <= left:
            return {}
        return {m.name: cost_usd(m, prompt + own.get(m.name, 0), answer) for m in self._catalog}

    @property
    def _top_prices(self) -> tuple[float, float]:
        """The highest input and output price per million tokens in the catalog (cached)."""
        self._refresh()
        return self._top

    @property
    def _system_tokens(self) -> dict[str, int]:
        """Each model's own system prompt in tokens, for those that have one (cached)."""
        self._refresh()
        return self._system

    def _refresh(self) -> None:
        catalog = self._catalog
        if self._top_for is not catalog:
            self._top = (
                max((m.input_cost_per_mtok or 0.0 for m in catalog), default=0.0),
                max((m.output_cost_per_mtok or 0.0 for m in catalog), default=0.0),
            )
            self._system = {m.name: count_tokens(m.system_prompt) + TOKENS_PER_MESSAGE
                            for m in catalog if m.system_prompt}  # fmt: skip
            self._top_for = catalog

    def judge(
        self,
        *,
        today: float,
        month: float,
        reserved: float = 0.0,
        last_hour: float = 0.0,
        hours_this_month: float = 1.0,
        estimates: Mapping[str, float | None] | None = None,
    ) -> Verdict:
        """The verdict for given spend and per-model estimates (pure)."""
        b = self._budget
        left = _left(b, today + reserved, month + reserved)
        estimates = estimates or {}
        metrics: dict[str, Any] = {
            "today_usd": round(today, 6),
            "month_usd": round(month, 6),
            "reserved_usd": round(reserved, 6),
            "last_hour_usd": round(last_hour, 6),
            "daily_budget_usd": b.daily_usd,
            "monthly_budget_usd": b.monthly_usd,
            "left_usd": None if left is None else round(left, 6),
        }
        if left is None:
            return self.verdict(
                confidence=0.0, state="no_budget", reason="no budget set", metrics=metrics
            )
        denied = frozenset(n for n, est in estimates.items() if est and est > left)
        # The estimates that explain a denial; the others would only grow every record with the
        # catalog (200 models: 200 numbers a request).
        metrics["estimates_usd"] = {n: round(estimates[n] or 0.0, 8) for n in sorted(denied)}
        allowed = frozenset(ALL_TIERS - self._tiers_all_denied(denied))
        share = _share(b, today, month)
        if left <= 0 or (denied and allowed != ALL_TIERS):
            return self.verdict(
                target=Tier.LOCAL,
                allowed=allowed if left > 0 else frozenset(ALL_TIERS - self._paid_tiers()),
                denied_models=denied,
                confidence=1.0,
                state="over_budget",
                reason=f"${max(left, 0):.6f} left of the budget ({share:.0%} spent)",
                metrics=metrics,
            )
        alarm = self._alarm(share, month, last_hour, hours_this_month)
        if alarm is None:
            return self.verdict(
                denied_models=denied, confidence=0.0, state="ok",
                reason=f"{share:.0%} of the budget spent", metrics=metrics,
            )  # fmt: skip
        state, reason = alarm
        return self.verdict(
            target=Tier.LOCAL, denied_models=denied, confidence=0.6, state=state, reason=reason,
            metrics=metrics,
        )  # fmt: skip

    def _alarm(
        self, share: float, month: float, last_hour: float, hours_this_month: float
    ) -> tuple[str, str] | None:
        """(state, reason) when spend is within budget but calls for caution: a spike in the
        last hour, or past `alert_share` of a budget; None when neither."""
        # The baseline is the month before the last hour: spend that all arrived in the last
        # hour (a first day of use) has nothing to be a spike against.
        earlier, hours_before = month - last_hour, hours_this_month - 1
        if last_hour > 0 and earlier > 0 and hours_before >= 1:
            hourly = earlier / hours_before
            if last_hour > self.spike_factor * hourly:
                return (
                    "spike",
                    f"last hour ${last_hour:.3g} > {self.spike_factor:g}x the hourly average "
                    f"before it (${hourly:.3g})",
                )
        if share >= self._budget.alert_share:
            return "alert", f"{share:.0%} of a budget spent"
        return None

    def _paid_tiers(self) -> frozenset[Tier]:
        """Tiers where every model costs money (a tier with one free model stays usable)."""
        c = self._catalog
        return frozenset(
            t for t in ALL_TIERS if c.in_tier(t) and not any(m.is_free for m in c.in_tier(t))
        )

    def _tiers_all_denied(self, denied: frozenset[str]) -> frozenset[Tier]:
        if not denied:
            return frozenset()
        c = self._catalog
        return frozenset(
            t for t in ALL_TIERS if c.in_tier(t) and all(m.name in denied for m in c.in_tier(t))
        )


def _left(b: Budget, day_spent: float, month_spent: float) -> float | None:
    lefts = [
        limit - spent
        for limit, spent in ((b.daily_usd, day_spent), (b.monthly_usd, month_spent))
        if limit is not None
    ]
    return min(lefts) if lefts else None


def _share(b: Budget, today: float, month: float) -> float:
    shares = [
        today / b.daily_usd if b.daily_usd else 0.0,
        month / b.monthly_usd if b.monthly_usd else 0.0,
    ]
    return max(shares)
