"""The cost agent: how much of the budget is left?"""

from __future__ import annotations

from typing import Any

from orchestra import ALL_TIERS, Agent, AgentContext, Budget, Catalog, Request, Tier, Verdict
from orchestra.spend import SpendTracker


class CostAgent(Agent):
    """Compares today's and this month's spend (from the store's ledger) with the budget.

    Over budget, tiers with no free model are disallowed; past the alert share of a budget it
    votes LOCAL; otherwise it abstains. Reads live totals from memory: no I/O per request.
    """

    name = "cost"

    def __init__(self) -> None:
        self._budget = Budget()
        self._spend = SpendTracker.seeded(0.0, 0.0)
        self._paid_tiers: frozenset[Tier] = frozenset()

    async def start(self, context: AgentContext) -> None:
        self._budget = context.budget
        self._spend = context.spend
        self._paid_tiers = _paid_tiers(context.catalog)

    async def check(self, request: Request | None) -> Verdict:
        return self.judge(self._spend.today(), self._spend.this_month())

    def judge(self, today: float, month: float) -> Verdict:
        """The verdict for given spend totals (pure)."""
        b = self._budget
        shares = {
            "day": today / b.daily_usd if b.daily_usd else 0.0,
            "month": month / b.monthly_usd if b.monthly_usd else 0.0,
        }
        metrics: dict[str, Any] = {
            "today_usd": round(today, 6),
            "month_usd": round(month, 6),
            "daily_budget_usd": b.daily_usd,
            "monthly_budget_usd": b.monthly_usd,
            "day_share": round(shares["day"], 4),
            "month_share": round(shares["month"], 4),
        }
        if b.daily_usd is None and b.monthly_usd is None:
            return self.verdict(
                confidence=0.0, state="no_budget", reason="no budget set", metrics=metrics
            )
        period, share = max(shares.items(), key=lambda kv: kv[1])
        if share >= 1.0:
            return self.verdict(
                target=Tier.LOCAL,
                allowed=frozenset(ALL_TIERS - self._paid_tiers),
                confidence=1.0,
                state="over_budget",
                reason=f"{period} budget spent ({share:.0%})",
                metrics=metrics,
            )
        if share >= b.alert_share:
            return self.verdict(
                target=Tier.LOCAL, confidence=0.6, state="alert",
                reason=f"{share:.0%} of the {period} budget spent", metrics=metrics,
            )  # fmt: skip
        return self.verdict(
            confidence=0.0, state="ok", reason=f"{share:.0%} of the {period} budget spent",
            metrics=metrics,
        )  # fmt: skip


def _paid_tiers(catalog: Catalog) -> frozenset[Tier]:
    """Tiers where every model costs money (a tier with one free model stays usable)."""
    return frozenset(
        t for t in Tier if catalog.in_tier(t) and not any(m.is_free for m in catalog.in_tier(t))
    )
