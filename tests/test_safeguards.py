"""Rules of the safeguards that no transport is needed to check (a `FunctionBackend` answers):
breakers and retries, Orchestra's own refusals, the budget boundary, spend periods, fail-closed
agents."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from budget_helpers import WantsCloud

from orchestra import Agent, Orchestra, ProviderError, Request, Tier, Verdict
from orchestra.config import parse_config
from orchestra.spend.ledger import Ask, Charge, Hold, Refusal
from orchestra.store import RequestRecord, SqliteStore
from orchestra.testing import Call, FunctionBackend


def catalog(*models: dict[str, Any], **sections: Any) -> Any:
    base = {"embedded": {"enabled": False}, "health": {"enabled": False}}
    return parse_config({**base, **sections, "models": list(models)})


def model(name: str, tier: str = "cloud", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "tier": tier,
        "litellm_model": f"openai/{name}",
        "input_cost_per_mtok": 0.15 if tier == "cloud" else 0.0,
        "output_cost_per_mtok": 0.60 if tier == "cloud" else 0.0,
        **extra,
    }


def failing(*names: str, kind: str = "server") -> FunctionBackend:
    def answer(call: Call) -> str:
        if call.model in names:
            raise ProviderError(f"{call.model}: HTTP 500", kind=kind, model=call.model)  # type: ignore[arg-type]
        return f"answer from {call.model}"

    return FunctionBackend(answer)


async def test_no_retry_when_the_failure_just_opened_the_breaker() -> None:
    config = catalog(
        model("flaky"),
        model("spare"),
        retry={"attempts_per_model": 3, "base_s": 0.01, "cap_s": 0.01},
        breaker={"failure_threshold": 1},
    )
    backend = failing("flaky")
    async with Orchestra(config, agents=[], backend=backend) as orc:
        result = await orc.complete("hello")
        assert orc.executor is not None and orc.executor.safeguards.breakers is not None
        assert orc.executor.safeguards.breakers.get("flaky").state == "open"
    failed, ok = result.attempts
    assert (failed.model, failed.ok, failed.retry_in_s) == ("flaky", False, None)
    assert (ok.model, ok.ok) == ("spare", True)
    assert [c.model for c in backend.calls] == ["flaky", "spare"], "flaky was called once"


async def test_a_failure_that_leaves_the_breaker_closed_is_retried() -> None:
    config = catalog(
        model("flaky"),
        model("spare"),
        retry={"attempts_per_model": 3, "base_s": 0.01, "cap_s": 0.01},
        breaker={"failure_threshold": 5},
    )
    backend = failing("flaky")
    async with Orchestra(config, agents=[], backend=backend) as orc:
        result = await orc.complete("hello")
    assert [a.model for a in result.attempts] == ["flaky", "flaky", "flaky", "spare"]
    assert result.attempts[0].retry_in_s is not None


async def test_our_own_rate_limit_never_counts_against_a_breaker() -> None:
    config = catalog(
        model("limited", requests_per_minute=1, when_limited="next"),
        model("spare"),
        breaker={"failure_threshold": 1},
    )
    backend = failing()
    async with Orchestra(config, agents=[], backend=backend) as orc:
        first = await orc.complete("one")
        second = await orc.complete("two")
        third = await orc.complete("three")
        assert orc.executor is not None and orc.executor.safeguards.breakers is not None
        breaker = orc.executor.safeguards.breakers.get("limited")
        assert breaker.state == "closed" and breaker.allow()
    assert first.model == "limited"
    for later in (second, third):
        refused, ok = later.attempts
        assert (refused.model, refused.error_kind, ok.model) == ("limited", "rate_limit", "spare")
    assert [c.model for c in backend.calls] == ["limited", "spare", "spare"]


async def test_a_budget_refusal_never_counts_against_a_breaker() -> None:
    config = catalog(
        model("pricey", input_cost_per_mtok=1e6, output_cost_per_mtok=1e6),
        model("local", tier="local"),
        budget={"daily_usd": 0.01},
        breaker={"failure_threshold": 1},
    )
    async with Orchestra(config, agents=[WantsCloud()], backend=failing()) as orc:
        results = [await orc.complete("hello") for _ in range(3)]
        assert orc.executor is not None and orc.executor.safeguards.breakers is not None
        assert orc.executor.safeguards.breakers.get("pricey").state == "closed"
    for result in results:
        assert result.model == "local"
        assert result.attempts[0].error_kind == "budget"


# -- the ledger's boundary, and its calendar ------------------------------------------------


def ask(usd: float, daily: float | None = 1.0, monthly: float | None = None) -> Ask:
    return Ask(model="c", tier=Tier.CLOUD, request_id="r", min_usd=usd, want_usd=usd,
               daily_usd=daily, monthly_usd=monthly, lease_s=60.0)  # fmt: skip


def spent(usd: float, at: float | None = None) -> RequestRecord:
    request = Request.of("hello")
    charge = Charge(model="c", tier=Tier.CLOUD, prompt_tokens=1, completion_tokens=1,
                    cost_usd=usd, at=at)  # fmt: skip
    return RequestRecord(
        request=request, verdicts=(), decision=None, result=None,
        created_at=at or time.time(), latency_ms=1.0, charges=(charge,),
    )  # fmt: skip


async def test_a_call_that_lands_exactly_on_the_budget_is_allowed(store: SqliteStore) -> None:
    await store.record(spent(0.75))
    exact = await store.reserve(ask(0.25))  # spent + reserved + ask == limit: allowed (not >=)
    assert isinstance(exact, Hold) and exact.usd == 0.25
    refused = await store.reserve(ask(2**-30))  # the smallest bit more: refused
    assert isinstance(refused, Refusal) and refused.limit == "daily"
    assert refused.left_usd == pytest.approx(0.0)
    store.release(exact)
    again = await store.reserve(ask(0.25))  # released: it fits again
    assert isinstance(again, Hold)


async def test_a_call_a_hair_over_the_monthly_budget_is_refused(store: SqliteStore) -> None:
    await store.record(spent(0.5))
    refused = await store.reserve(ask(0.5 + 2**-30, daily=None, monthly=1.0))
    assert isinstance(refused, Refusal) and refused.limit == "monthly"


def local_ts(*args: int) -> float:
    return datetime(*args).timestamp()


async def test_the_daily_total_starts_again_at_midnight_and_the_month_goes_on(
    store: SqliteStore,
) -> None:
    late, after = local_ts(2026, 11, 14, 23, 59, 30), local_ts(2026, 11, 15, 0, 0, 30)
    await store.record(spent(2.0, at=local_ts(2026, 11, 3, 12, 0)))
    await store.record(spent(0.5, at=late))
    t = await store.spend_totals(late + 1)
    assert (t.today_usd, t.month_usd) == (0.5, 2.5)
    t = await store.spend_totals(after)
    assert (t.today_usd, t.month_usd) == (0.0, 2.5), "a new day, the same month"
    await store.record(spent(0.25, at=after))
    t = await store.spend_totals(after + 1)
    assert (t.today_usd, t.month_usd) == (0.25, 2.75)


async def test_the_month_starts_again_on_the_first(store: SqliteStore) -> None:
    await store.record(spent(9.0, at=local_ts(2026, 11, 30, 23, 0)))
    first = local_ts(2026, 12, 1, 1, 0)
    t = await store.spend_totals(first)
    assert (t.today_usd, t.month_usd) == (0.0, 0.0)
    await store.record(spent(1.0, at=first + 60))
    t = await store.spend_totals(first + 3600)
    assert (t.today_usd, t.month_usd) == (1.0, 1.0)
    assert (await store.spend_totals(first + timedelta(days=1).total_seconds())).today_usd == 0


async def test_spend_dated_after_today_still_counts_today(store: SqliteStore) -> None:
    # A wall clock stepped a day forward and back: what was spent "tomorrow" is real spend.
    now = time.time()
    await store.record(spent(3.0, at=now + 86400))
    assert (await store.spend_totals(now)).today_usd == 3.0
    refused = await store.reserve(ask(0.5, daily=3.0))
    assert isinstance(refused, Refusal)


# -- fail-closed agents keep a request local ---------------------------------------------------


class BrokenGuard(Agent):
    name = "guard"
    fail_closed = True

    def __init__(self, how: str) -> None:
        self.how = how
        self.timeout_s = 0.02

    async def check(self, request: Request | None) -> Verdict:
        if self.how == "raise":
            raise RuntimeError("scanner crashed")
        await asyncio.sleep(1.0)  # overruns its budget
        return self.verdict(reason="never seen")


@pytest.mark.parametrize("how", ["raise", "overrun"])
async def test_a_fail_closed_agent_that_breaks_keeps_the_request_local(how: str) -> None:
    config = catalog(model("cloud-model"), model("local-model", tier="local"))
    backend = failing()
    async with Orchestra(config, agents=[WantsCloud(), BrokenGuard(how)], backend=backend) as orc:
        started = time.perf_counter()
        result = await orc.complete("a secret inside, maybe")
        assert time.perf_counter() - started < 1.0, "the overrun was cut at its budget"
    assert (result.model, result.tier) == ("local-model", Tier.LOCAL)
    assert [c.model for c in backend.calls] == ["local-model"], "the cloud never saw it"
    guard = next(v for v in result.verdicts if v.agent == "guard")
    assert guard.allowed == frozenset({Tier.LOCAL}) and "failing closed" in guard.reason


async def test_without_fail_closed_a_broken_agent_is_ignored() -> None:
    class Plain(BrokenGuard):
        fail_closed = False

    config = catalog(model("cloud-model"), model("local-model", tier="local"))
    async with Orchestra(config, agents=[WantsCloud(), Plain("raise")], backend=failing()) as orc:
        result = await orc.complete("hello")
    assert result.tier is Tier.CLOUD
