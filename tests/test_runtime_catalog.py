"""The runtime's catalog changed while it runs: the backend, the executor's limiters, the agents
and the health checks follow; a request in flight keeps the catalog it was decided against."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from conftest import model_toml

from orchestra import ConfigError, ModelSpec, Orchestra, Tier, UnknownModelError
from orchestra.agents.context import AgentContext
from orchestra.agents.cost import CostAgent
from orchestra.core.catalog import Catalog
from orchestra.spend.budget import Budget
from orchestra.spend.tracker import SpendTracker
from orchestra.store import SqliteStore
from orchestra.testing import Call, FunctionBackend

UNUSED_URL = "http://127.0.0.1:9/v1"


class Preparing(FunctionBackend):
    """A function backend that remembers which models it was prepared for."""

    def __init__(self, handler: Callable[[Call], object]) -> None:
        super().__init__(handler)  # type: ignore[arg-type]
        self.prepared: list[str] = []

    async def prepare(self, specs: Sequence[ModelSpec]) -> None:
        self.prepared += [s.name for s in specs]


def spec(name: str, **fields: object) -> ModelSpec:
    base: dict[str, object] = {
        "name": name,
        "tier": "cloud",
        "litellm_model": f"openai/{name}",
        "api_base": UNUSED_URL,
        "input_cost_per_mtok": 1.0,
        "output_cost_per_mtok": 1.0,
    }
    return ModelSpec.model_validate({**base, **fields})


async def test_add_update_remove_while_running(write_config: Callable[..., Path]) -> None:
    backend = Preparing(lambda call: f"from {call.model}")
    config = write_config(model_toml("first", UNUSED_URL))
    async with Orchestra(config, backend=backend, agents=[CostAgent()]) as orc:
        await orc.ready()
        assert backend.prepared == ["first"]
        await orc.add_model(spec("second", requests_per_minute=60))
        assert backend.prepared == ["first", "second"], "the backend learns it before any call"
        assert orc.catalog.names == ("first", "second")
        result = await orc.complete("hello", model="second")
        assert result.text == "from second" and result.model == "second"
        executor = orc.executor
        assert executor is not None
        limiter = executor.safeguards.limiters["second"]

        await orc.update_model(spec("second", requests_per_minute=60, output_cost_per_mtok=9.0))
        assert executor.safeguards.limiters["second"] is limiter, "same limits: same limiter"
        dearer = await orc.complete("hello", model="second")
        assert dearer.cost_usd > result.cost_usd
        cost_agent = next(v for v in await orc.verdicts("hello") if v.agent == "cost")
        assert cost_agent.state == "no_budget"  # the cost agent sees the catalog; no budget set

        await orc.update_model(spec("second", requests_per_minute=5))
        assert executor.safeguards.limiters["second"] is not limiter, "new limits: new limiter"

        with pytest.raises(ConfigError, match="already in the catalog"):
            await orc.add_model(spec("first"))
        await orc.remove_model("second")
        assert "second" not in executor.safeguards.limiters
        with pytest.raises(UnknownModelError):
            await orc.complete("hello", model="second")
        with pytest.raises(UnknownModelError):
            await orc.remove_model("second")
        with pytest.raises(UnknownModelError):
            await orc.update_model(spec("second"))


async def test_the_cost_agent_prices_an_added_model(write_config: Callable[..., Path]) -> None:
    config = write_config(model_toml("first", UNUSED_URL), extra="[budget]\ndaily_usd = 1.0\n")
    backend = FunctionBackend(lambda call: "ok")
    async with Orchestra(config, backend=backend, agents=[CostAgent()]) as orc:
        await orc.add_model(spec("pricey", input_cost_per_mtok=1e6, output_cost_per_mtok=1e6))
        verdict = next(v for v in await orc.verdicts("hello") if v.agent == "cost")
        assert "pricey" in verdict.denied_models, verdict


async def test_an_added_model_is_priced_from_litellms_table(
    write_config: Callable[..., Path],
) -> None:
    """As a configured model is: a model added (or changed) with no price of its own takes
    LiteLLM's, so under a budget it is called and charged, not refused as unpriced."""
    config = write_config(model_toml("first", UNUSED_URL), extra="[budget]\ndaily_usd = 1.0\n")
    unpriced = {"input_cost_per_mtok": None, "output_cost_per_mtok": None}
    listed = {**unpriced, "litellm_model": "openai/gpt-4o-mini"}
    async with Orchestra(config, backend=FunctionBackend(lambda call: "ok"), agents=[]) as orc:
        await orc.add_model(spec("late", **listed))
        assert orc.catalog.get("late").input_cost_per_mtok == pytest.approx(0.15)
        result = await orc.complete("hello", model="late")
        assert result.model == "late" and result.cost_usd > 0
        await orc.update_model(spec("late", **{**listed, "output_cost_per_mtok": 9.0}))
        assert orc.catalog.get("late").output_cost_per_mtok == 9.0, "its own price wins"
        await orc.update_model(spec("late", **unpriced))  # openai/late: LiteLLM knows no price
        assert orc.catalog.get("late").input_cost_per_mtok is None


async def test_a_request_in_flight_keeps_its_catalog(write_config: Callable[..., Path]) -> None:
    started = asyncio.Event()

    async def slow(call: Call) -> str:
        started.set()
        await asyncio.sleep(0.2)
        return f"from {call.model}"

    config = write_config(model_toml("first", UNUSED_URL))
    async with Orchestra(config, backend=FunctionBackend(slow), agents=[]) as orc:
        await orc.add_model(spec("second"))
        call = asyncio.create_task(orc.complete("hello", model="second"))
        await started.wait()
        await orc.remove_model("second")
        result = await call
        assert result.model == "second" and result.text == "from second"
        streaming = orc.stream("hello", model="first")
        pieces = aiter(streaming)
        first = await anext(pieces)
        await orc.update_model(spec("first", tier="edge"))
        assert first == "from first" and streaming.model is not None
        assert streaming.model.tier is Tier.CLOUD, "the stream's model as it was decided"
        assert [p async for p in pieces] == []
        assert streaming.result is not None and streaming.result.tier is Tier.CLOUD


async def test_stored_models_keep_their_order_across_processes(db_path: Path) -> None:
    async with SqliteStore(db_path) as one, SqliteStore(db_path) as two:
        a = await one.save_model(spec("a"), at=1.0)
        b = await two.save_model(spec("b", tier="edge"), at=2.0)
        gone = await one.drop_model("a", at=3.0)
        assert a.version < b.version < gone.version
        stored = await two.stored_models()
        assert [(s.name, s.spec) for s in stored] == [("b", spec("b", tier="edge")), ("a", None)]
        assert await one.stored_models(after_version=b.version) == [gone]
    async with SqliteStore(db_path) as reopened:
        assert [s.name for s in await reopened.stored_models()] == ["b", "a"]


async def test_the_connectivity_agent_probes_an_added_endpoint(
    write_config: Callable[..., Path],
) -> None:
    from orchestra.agents.connectivity import ConnectivityAgent
    from orchestra.testing import StubProvider

    with StubProvider() as first, StubProvider() as second:
        config = write_config(model_toml("first", first.url))
        agent = ConnectivityAgent()
        async with Orchestra(config, backend=FunctionBackend(lambda c: "ok"), agents=[agent]):
            before = (await agent.check(None)).metrics["endpoints"]
            assert [k for k in before if str(second.port) in k] == []
            await agent.catalog_changed(
                AgentContext(catalog=Catalog([spec("second", api_base=second.url)]),
                             budget=Budget(), spend=SpendTracker())
            )  # fmt: skip
            after = (await agent.check(None)).metrics["endpoints"]
            assert [k for k in after if str(second.port) in k], after
            assert [k for k in after if str(first.port) in k] == [], "a removed one is dropped"
