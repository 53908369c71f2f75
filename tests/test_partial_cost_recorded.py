"""A stream that breaks after its first text, or that its reader leaves, is billed for what it
sent: its record in the history says so, as the ledger does (to a stub, through the OpenAI SDK
and through LiteLLM)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from budget_helpers import WantsCloud
from conftest import answer

from orchestra import Orchestra, StreamBroken
from orchestra.config import parse_config
from orchestra.store import SqliteStore
from orchestra.testing import Behaviour, StubProvider

pytestmark = pytest.mark.usefixtures("through_each_backend")

REPLY = " ".join(f"w{i}" for i in range(200))
PROMPT = "Tell me a story"


def config(home: Path, paid: StubProvider, free: StubProvider) -> Any:
    def model(name: str, url: str, tier: str, price: float) -> dict[str, Any]:
        return {
            "name": name, "tier": tier, "litellm_model": f"openai/{name}", "api_base": url,
            "api_key_env": "STUB_API_KEY", "input_cost_per_mtok": price,
            "output_cost_per_mtok": price,
        }  # fmt: skip

    return parse_config(
        {
            "embedded": {"enabled": False},
            "health": {"enabled": False},
            "store": {"path": str(home / "orchestra.db")},
            "budget": {"daily_usd": 1.0},
            "models": [model("paid", paid.url, "cloud", 10.0), model("free", free.url, "local", 0)],
        }
    )


@pytest.mark.parametrize("ending", ["broken", "abandoned"])
async def test_a_partial_answers_record_carries_what_it_was_billed(
    tmp_path: Path, stub: StubProvider, stub2: StubProvider, ending: str
) -> None:
    kind = "drop_stream" if ending == "broken" else "healthy"
    stub.behaviour = Behaviour(kind=kind, reply=REPLY, chunks_before_drop=5)
    async with Orchestra(config(tmp_path, stub, stub2), agents=[WantsCloud()]) as orc:
        if ending == "broken":
            with pytest.raises(StreamBroken):
                async with orc.stream("Tell me a story") as s:
                    async for _ in s:
                        pass
        else:
            async with orc.stream("Tell me a story") as s:
                async for _ in s:
                    break
        summary = await orc.spend_summary()
        (entry,) = await orc.history(limit=5)
        store = orc._require_store()
        assert isinstance(store, SqliteStore)
        ((model, prompt, answer),) = await store.fetch(
            "SELECT model, prompt_tokens, completion_tokens FROM ledger"
        )
    assert summary["total_usd"] > 0, "the partial answer was billed"
    assert entry["status"] == "error"
    assert entry["cost_usd"] == pytest.approx(summary["total_usd"]), "the record says so too"
    # And who sent it, and how much: the record names the model and the tokens it was billed.
    assert (entry["model"], entry["tier"]) == (model, "cloud") == ("paid", "cloud")
    assert (entry["prompt_tokens"], entry["completion_tokens"]) == (prompt, answer)
    assert answer > 0


async def test_a_whole_answer_cut_off_mid_body_is_charged(
    tmp_path: Path, stub: StubProvider, stub2: StubProvider
) -> None:
    stub.behaviour = Behaviour(kind="drop_stream", reply=REPLY)  # half the body, then closed
    async with Orchestra(config(tmp_path, stub, stub2), agents=[WantsCloud()]) as orc:
        result = await orc.complete("Tell me a story")
        summary = await orc.spend_summary()
    assert result.model == "free", "the paid model's answer never arrived whole"
    assert stub.requests, "the paid model was called, and answered"
    assert summary["total_usd"] > 0, "what the provider generated is on the ledger"


@pytest.mark.parametrize("stream", [False, True])
async def test_an_empty_answer_the_provider_billed_is_charged(
    tmp_path: Path, stub: StubProvider, stub2: StubProvider, stream: bool
) -> None:
    """200, no text, usage reported (a model that spent its cap thinking, say): the provider
    billed the prompt; every such call is on the ledger and in the record, the free model
    answering in the end."""
    stub.behaviour = Behaviour(reply="")
    async with Orchestra(config(tmp_path, stub, stub2), agents=[WantsCloud()]) as orc:
        result, text = await answer(orc, "Tell me a story", stream)
        summary = await orc.spend_summary()
        (entry,) = await orc.history(limit=5)
    assert result is not None and result.model == "free" and text == "Rome"
    calls = len(stub.requests)
    assert calls >= 1
    billed = calls * len(PROMPT.split()) * 10.0 / 1e6  # the prompt, as reported
    assert summary["total_usd"] == pytest.approx(billed), "every billed call is charged"
    assert summary["reserved_usd"] == 0.0
    assert entry["cost_usd"] == pytest.approx(billed)
