"""A model's own `system_prompt` is sent with every call, so it is paid for: the budget's
reservation counts it, and a provider that reports no usage (or too little) is charged for it
(through LiteLLM, to a stub provider that counts a token per word)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from budget_helpers import WantsCloud

from orchestra import Orchestra
from orchestra.config import parse_config
from orchestra.testing import Behaviour, StubProvider

PRICE = 10.0  # USD per million tokens, in and out
SYSTEM = " ".join(f"s{i}" for i in range(2000))  # 2,000 tokens sent with every call


def config(home: Path, paid: StubProvider, free: StubProvider, budget: float) -> Any:
    def model(name: str, url: str, tier: str, price: float) -> dict[str, Any]:
        return {
            "name": name, "tier": tier, "litellm_model": f"openai/{name}", "api_base": url,
            "api_key_env": "STUB_API_KEY", "input_cost_per_mtok": price,
            "output_cost_per_mtok": price, "system_prompt": SYSTEM,
        }  # fmt: skip

    return parse_config(
        {
            "embedded": {"enabled": False},
            "health": {"enabled": False},
            "store": {"path": str(home / "orchestra.db")},
            "budget": {"daily_usd": budget},
            "models": [
                model("paid", paid.url, "cloud", PRICE),
                model("free", free.url, "local", 0.0),
            ],
        }
    )


def words_sent(stub: StubProvider) -> int:
    return sum(len(m["content"].split()) for m in stub.requests[-1]["body"]["messages"])


async def test_a_call_without_usage_is_charged_for_the_system_prompt_it_sent(
    tmp_path: Path, stub: StubProvider, stub2: StubProvider
) -> None:
    stub.behaviour = Behaviour(reply="w1 w2 w3", usage=False)
    async with Orchestra(config(tmp_path, stub, stub2, 1.0), agents=[WantsCloud()]) as orc:
        result = await orc.complete("hello there")
        assert result.model == "paid"
        assert words_sent(stub) > 2000
        assert result.prompt_tokens >= words_sent(stub), "charged for what was sent"
        summary = await orc.spend_summary()
    assert summary["total_usd"] >= words_sent(stub) * PRICE / 1e6


async def test_the_budget_counts_the_system_prompt_before_the_call(
    tmp_path: Path, stub: StubProvider, stub2: StubProvider
) -> None:
    """The system prompt alone costs more than the budget: the paid model is never called."""
    budget = 0.01  # 2,000 system tokens cost $0.02
    stub.behaviour = Behaviour(reply="w1")
    async with Orchestra(config(tmp_path, stub, stub2, budget), agents=[WantsCloud()]) as orc:
        result = await orc.complete("hello there", max_tokens=1)
        summary = await orc.spend_summary()
    assert result.model == "free"
    assert stub.requests == [], "the paid model was never called"
    assert summary["total_usd"] <= budget


async def test_a_token_limit_counts_the_system_prompt(
    tmp_path: Path, stub: StubProvider, stub2: StubProvider
) -> None:
    """1,000 tokens a minute cannot carry a 2,000-token system prompt: refused before the call
    (as too large for the limit), and the next model answers."""
    settings = config(tmp_path, stub, stub2, budget=100.0)
    paid = settings.models[0].model_copy(update={"tokens_per_minute": 1000})
    settings = settings.model_copy(update={"models": [paid, *settings.models[1:]]})
    async with Orchestra(settings, agents=[WantsCloud()]) as orc:
        result = await orc.complete("hi", max_tokens=10)
    assert result.model == "free" and not stub.requests
    assert result.attempts[0].model == "paid" and not result.attempts[0].ok
