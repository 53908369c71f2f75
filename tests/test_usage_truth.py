"""What a call is charged when the provider's word cannot be taken: usage reported below what
the text itself holds, and an answer that runs past the cap it was sent (through LiteLLM, to a
stub provider that counts a token per word)."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any

import pytest
from budget_helpers import WantsCloud
from conftest import answer
from hypothesis import given
from hypothesis import strategies as st

from orchestra import Orchestra
from orchestra.config import parse_config
from orchestra.spend.estimate import least_tokens
from orchestra.spend.settle import AnswerMeter
from orchestra.testing import Behaviour, StubProvider

IN_PRICE, OUT_PRICE = 1.0, 10.0  # USD per million tokens
PROMPT = "Write a long story about a lighthouse keeper and the sea."


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))  # all different: LiteLLM stops repeated chunks


def config(home: Path, paid: StubProvider, free: StubProvider, budget: float | None) -> Any:
    def model(name: str, url: str, tier: str, price: float) -> dict[str, Any]:
        return {
            "name": name, "tier": tier, "litellm_model": f"openai/{name}", "api_base": url,
            "api_key_env": "STUB_API_KEY", "input_cost_per_mtok": IN_PRICE * price,
            "output_cost_per_mtok": OUT_PRICE * price,
        }  # fmt: skip

    return parse_config(
        {
            "embedded": {"enabled": False},
            "health": {"enabled": False},
            "store": {"path": str(home / "orchestra.db")},
            "budget": {"daily_usd": budget} if budget else {},
            "models": [model("paid", paid.url, "cloud", 1.0), model("free", free.url, "local", 0)],
        }
    )


def cost(prompt: int, answer: int) -> float:
    return (prompt * IN_PRICE + answer * OUT_PRICE) / 1e6


@pytest.mark.parametrize("stream", [False, True])
async def test_usage_reported_below_the_text_is_charged_from_the_text(
    tmp_path: Path,
    stub: StubProvider,
    stub2: StubProvider,
    stream: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stub.behaviour = Behaviour(reply=words(300), usage_scale=0.1)  # owns up to 30 of 300
    async with Orchestra(config(tmp_path, stub, stub2, 1.0), agents=[WantsCloud()]) as orc:
        result, text = await answer(orc, PROMPT, stream)
        assert result is not None and result.model == "paid"
        assert least_tokens(text) == 300
        assert result.completion_tokens >= 300, "charged for the text, not the report"
        assert result.cost_usd >= cost(len(PROMPT.split()), 300)
        summary = await orc.spend_summary()
        assert summary["total_usd"] == pytest.approx(result.cost_usd), "the ledger agrees"
        (entry,) = await orc.history(limit=1)
        assert entry["cost_usd"] == pytest.approx(result.cost_usd)
    assert "reported" in caplog.text and "counted here" in caplog.text


async def test_honest_usage_is_charged_as_reported(
    tmp_path: Path, stub: StubProvider, stub2: StubProvider
) -> None:
    stub.behaviour = Behaviour(reply=words(300))
    async with Orchestra(config(tmp_path, stub, stub2, 1.0), agents=[WantsCloud()]) as orc:
        result = await orc.complete(PROMPT)
        assert (result.prompt_tokens, result.completion_tokens) == (len(PROMPT.split()), 300)
        assert result.cost_usd == pytest.approx(cost(len(PROMPT.split()), 300))


async def test_a_stream_past_its_cap_is_cut_there_and_stays_in_budget(
    tmp_path: Path, stub: StubProvider, stub2: StubProvider
) -> None:
    cap = 40
    budget = 3 * cost(60, cap + 20)  # room for a few capped answers, never for a whole one
    stub.behaviour = Behaviour(reply=words(5000), ignore_cap=True)
    async with Orchestra(config(tmp_path, stub, stub2, budget), agents=[WantsCloud()]) as orc:
        async with orc.stream(PROMPT, max_tokens=cap) as s:
            text = "".join([piece async for piece in s])
        result = s.result
        assert result is not None and result.model == "paid"
        assert cap < least_tokens(text) <= cap + 1, "cut at the first piece past the cap"
        assert result.completion_tokens == least_tokens(text)
        summary = await orc.spend_summary()
        assert summary["total_usd"] <= budget
        assert summary["reserved_usd"] == 0.0
    assert stub.requests[-1]["body"]["max_tokens"] == cap


async def test_a_whole_answer_past_its_cap_is_charged_as_reported(
    tmp_path: Path, stub: StubProvider, stub2: StubProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """With no budget, nothing holds the call to its cap: the truth is charged, and said."""
    stub.behaviour = Behaviour(reply=words(500), ignore_cap=True)
    async with Orchestra(config(tmp_path, stub, stub2, None), agents=[WantsCloud()]) as orc:
        with caplog.at_level(logging.WARNING, logger="orchestra"):
            result = await orc.complete(PROMPT, max_tokens=40)
    assert result.completion_tokens == 500
    assert "ran past its cap of 40" in caplog.text


async def test_a_whole_answer_past_its_cap_stays_in_budget_when_held_whole(
    tmp_path: Path, stub: StubProvider, stub2: StubProvider
) -> None:
    """Under a budget with room to spare, a call not streamed is held for the longest answer its
    model can give (its context window), not only its cap: a provider that ignores the cap is
    charged its whole answer, and the budget still holds it."""
    prompt = len(PROMPT.split())
    budget = 5 * cost(prompt + 20, 8192)  # the whole answer is a small share of it
    stub.behaviour = Behaviour(reply=words(2000), ignore_cap=True)
    async with Orchestra(config(tmp_path, stub, stub2, budget), agents=[WantsCloud()]) as orc:
        result = await orc.complete(PROMPT, max_tokens=40)
        summary = await orc.spend_summary()
    assert result.model == "paid" and result.completion_tokens == 2000
    assert not stub.requests[-1]["body"].get("stream"), "made as asked, not streamed"
    assert stub.requests[-1]["body"]["max_tokens"] == 40
    assert summary["total_usd"] == pytest.approx(result.cost_usd)
    assert summary["total_usd"] <= budget
    assert summary["reserved_usd"] == 0.0


async def test_a_whole_answer_that_could_overrun_the_budget_is_cut_at_its_cap(
    tmp_path: Path, stub: StubProvider, stub2: StubProvider
) -> None:
    """When the budget cannot spare the longest answer, a call not streamed is streamed by
    Orchestra and cut as soon as its answer reaches its cap: the caller still gets one whole
    `Result`, and a provider that ignores the cap cannot take the ledger past the budget, call
    after call."""
    cap = 40
    prompt = len(PROMPT.split())
    budget = 3 * cost(prompt + 20, cap + 20)  # a few capped answers, never one whole one
    stub.behaviour = Behaviour(reply=words(5000), ignore_cap=True)
    async with Orchestra(config(tmp_path, stub, stub2, budget), agents=[WantsCloud()]) as orc:
        results = [await orc.complete(PROMPT, max_tokens=cap) for _ in range(8)]
        summary = await orc.spend_summary()
        history = await orc.history(limit=8)
    paid = [r for r in results if r.model == "paid"]
    assert paid, "the budget paid for some"
    assert any(r.model == "free" for r in results), "and then the budget stopped them"
    for r in paid:
        assert least_tokens(r.text) == cap, "cut where it reached its cap"
        assert r.completion_tokens == cap
    assert all(req["body"].get("stream") for req in stub.requests), "streamed to be cut"
    assert summary["total_usd"] <= budget
    assert summary["total_usd"] == pytest.approx(sum(r.cost_usd for r in results))
    assert summary["reserved_usd"] == 0.0
    assert sum(e["cost_usd"] for e in history) == pytest.approx(summary["total_usd"])


ABSURD = 10**20  # more than a 64-bit integer holds


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("report", "budget"),
    [
        ({"prompt_tokens": ABSURD, "completion_tokens": 300, "total_tokens": ABSURD + 300}, 0.1),
        ({"prompt_tokens": 11, "completion_tokens": ABSURD, "total_tokens": ABSURD + 11}, None),
        ({"prompt_tokens": 10**9, "completion_tokens": 300}, 0.1),  # an 11-word prompt
    ],
)
async def test_usage_reported_past_anything_possible_is_counted_from_the_text(
    store_location: str | Path,
    tmp_path: Path,
    stub: StubProvider,
    stub2: StubProvider,
    report: dict[str, int],
    budget: float | None,
    stream: bool,
) -> None:
    """A prompt cannot hold more tokens than bytes (and its template's), nor an answer more
    than any model gives: such a report is overruled like one too low. The answer is recorded
    (the store holds the figures), at the cost the caller saw, within the budget (0.1: two
    calls' reservations)."""
    conf = config(tmp_path, stub, stub2, budget)
    if isinstance(store_location, str):
        conf = conf.model_copy(
            update={"store": conf.store.model_copy(update={"url": store_location})}
        )
    stub.behaviour = Behaviour(reply=words(300), usage_report=report)
    async with Orchestra(conf, agents=[WantsCloud()]) as orc:
        result, text = await answer(orc, PROMPT, stream)
        assert result is not None and result.model == "paid" and least_tokens(text) == 300
        assert len(PROMPT.split()) <= result.prompt_tokens < 100
        assert 300 <= result.completion_tokens <= 4096
        summary = await orc.spend_summary()
        (entry,) = await orc.history(limit=1)
    assert entry["status"] == "ok" and entry["cost_usd"] == pytest.approx(result.cost_usd)
    assert summary["total_usd"] == pytest.approx(result.cost_usd), "the ledger agrees"
    assert summary["total_usd"] <= (budget or 1.0) and summary["reserved_usd"] == 0.0


@given(text=st.text(st.sampled_from("ab1 \n\t."), max_size=60), cuts=st.lists(st.integers(0, 60)))
def test_the_meter_counts_words_across_any_split(text: str, cuts: list[int]) -> None:
    meter = AnswerMeter(None)
    edges = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    for a, b in itertools.pairwise(edges):
        meter.add(text[a:b])
    assert meter.least == least_tokens(text) == len(text.split())


def test_the_meter_says_when_the_cap_is_passed() -> None:
    meter = AnswerMeter(3)
    assert [meter.add(p) for p in ("one two", " thr", "ee", " four")] == [
        False,
        False,
        False,
        True,
    ]
