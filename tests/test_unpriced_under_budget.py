"""A budget holds every call to it: a cloud model with no known price cannot be, so while a
budget is set it is refused (the next candidate answers, or the error says how to price it). A
LAN or local model with no price is taken as self-hosted and free. Real stubs, through LiteLLM."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from test_partial_cost_recorded import WantsCloud

from orchestra import AllCandidatesFailed, Orchestra
from orchestra.config import parse_config
from orchestra.testing import StubProvider


def _config(home: Path, models: list[tuple[str, str, str, float | None]], budget: bool) -> Any:
    def model(name: str, url: str, tier: str, price: float | None) -> dict[str, Any]:
        priced = {} if price is None else {"input_cost_per_mtok": price,
                                           "output_cost_per_mtok": price}  # fmt: skip
        return {"name": name, "tier": tier, "litellm_model": f"openai/{name}", "api_base": url,
                "api_key_env": "STUB_API_KEY", **priced}  # fmt: skip

    return parse_config(
        {
            "embedded": {"enabled": False},
            "health": {"enabled": False},
            "store": {"path": str(home / "orchestra.db")},
            "budget": {"daily_usd": 1.0} if budget else {},
            "models": [model(*m) for m in models],
        }
    )


async def test_an_unpriced_cloud_model_is_refused_under_a_budget(
    tmp_path: Path, stub: StubProvider, stub2: StubProvider
) -> None:
    config = _config(tmp_path, [("mystery", stub.url, "cloud", None),
                                ("free", stub2.url, "local", 0.0)], budget=True)  # fmt: skip
    async with Orchestra(config, agents=[WantsCloud()]) as orc:
        result = await orc.complete("hello")
    assert result.model == "free" and not stub.requests
    assert result.attempts[0].model == "mystery" and result.attempts[0].error_kind == "budget"


async def test_alone_it_says_how_to_price_it(tmp_path: Path, stub: StubProvider) -> None:
    config = _config(tmp_path, [("mystery", stub.url, "cloud", None)], budget=True)
    async with Orchestra(config, agents=[]) as orc:
        with pytest.raises(AllCandidatesFailed, match=r"no price known.*input_cost_per_mtok"):
            await orc.complete("hello")
    assert not stub.requests


async def test_without_a_budget_it_is_called(tmp_path: Path, stub: StubProvider) -> None:
    config = _config(tmp_path, [("mystery", stub.url, "cloud", None)], budget=False)
    async with Orchestra(config, agents=[]) as orc:
        assert (await orc.complete("hello")).model == "mystery"


async def test_an_unpriced_lan_model_is_taken_as_self_hosted(
    tmp_path: Path, stub: StubProvider, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config(tmp_path, [("lan", stub.url, "edge", None)], budget=True)
    with caplog.at_level(logging.WARNING, logger="orchestra.spend"):
        async with Orchestra(config, agents=[]) as orc:
            assert (await orc.complete("hello")).model == "lan"
    assert "taken as self-hosted" in caplog.text
