"""`FunctionBackend`: a backend from one function, for tests that need no HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from orchestra import Orchestra, ProviderError, Tier
from orchestra.config import parse_config
from orchestra.core.result import Usage
from orchestra.execution.backend import Completion
from orchestra.testing import Call, FunctionBackend

CONFIG = parse_config(
    {
        "embedded": {"enabled": False},
        "health": {"enabled": False},
        "models": [
            {
                "name": "cloud-a",
                "tier": "cloud",
                "litellm_model": "openai/a",
                "input_cost_per_mtok": 1.0,
                "output_cost_per_mtok": 2.0,
            },
            {"name": "cloud-b", "tier": "cloud", "litellm_model": "openai/b"},
        ],
    }
)


async def test_a_function_answers_and_the_call_is_recorded() -> None:
    backend = FunctionBackend(lambda call: f"{call.model} says hi to {call.prompt!r}")
    async with Orchestra(CONFIG, agents=[], backend=backend) as orc:
        result = await orc.complete("Ada", max_tokens=7)
        history = await orc.history()
    assert result.text == "cloud-a says hi to 'Ada'"
    assert (result.model, result.tier) == ("cloud-a", Tier.CLOUD)
    (call,) = backend.calls
    assert call.params.max_tokens == 7 and not call.stream
    # Usage is counted from the text and priced with the catalog's prices.
    assert result.prompt_tokens > 0 and result.completion_tokens > 0
    expected = (result.prompt_tokens * 1.0 + result.completion_tokens * 2.0) / 1e6
    assert result.cost_usd == pytest.approx(expected)
    assert history[0]["request_id"] == result.request_id


async def test_an_async_function_a_completion_and_a_provider_error() -> None:
    async def answer(call: Call) -> Any:
        if call.model == "cloud-a":
            raise ProviderError("down", kind="server", model="cloud-a")
        return Completion(text="from b", usage=Usage(prompt_tokens=3, completion_tokens=2))

    backend = FunctionBackend(answer)
    async with Orchestra(CONFIG, agents=[], backend=backend) as orc:
        result = await orc.complete("hello", timeout_s=5)
    assert (result.text, result.model, result.prompt_tokens) == ("from b", "cloud-b", 3)
    assert next(a.model for a in result.attempts if not a.ok) == "cloud-a"


async def test_pieces_are_streamed_one_by_one() -> None:
    backend = FunctionBackend(lambda call: ["Par", "is", "."])
    async with Orchestra(CONFIG, agents=[], backend=backend) as orc:
        stream = orc.stream("capital of France?")
        pieces = [p async for p in stream]
    assert pieces == ["Par", "is", "."]
    assert stream.result is not None and stream.result.text == "Paris."
    assert backend.calls[0].stream
