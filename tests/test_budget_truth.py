"""The budget holds, whatever the answer's length, the script, a missing or understated usage
report, a stream that runs past its cap or one left half-read: a hypothesis test through LiteLLM
against a stub provider."""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from budget_helpers import WantsCloud
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestra import Orchestra
from orchestra.config import parse_config
from orchestra.testing import Behaviour, StubProvider

IN_PRICE, OUT_PRICE = 2.0, 8.0  # USD per million tokens
BUDGET = 0.004  # about two long answers

PROMPTS = {
    "latin": "Explain, step by step, how a transformer model turns words into an answer.",
    "cjk": "人工智能正在改变我们的生活方式。请解释量子计算的基本原理。" * 4,
    "emoji": "Summarise this party 🎉🎉🎉 with feelings 😀👍🏽❤️🔥 " * 3,
    "mixed": "Traduis: 東京は日本の首都です. Затем объясни по-русски. Then in English.",
}


@dataclass(frozen=True)
class Call:
    prompt: str
    words: int  # how long the provider would answer if not capped
    max_tokens: int | None
    usage: bool  # does the provider report usage?
    usage_scale: float  # how much of its answer it owns up to (1.0: honest)
    stream: bool
    abandon: bool  # stop reading after the first piece
    ignore_cap: bool  # a provider that runs past its max_tokens


calls = st.builds(
    Call,
    prompt=st.sampled_from(sorted(PROMPTS)),
    words=st.integers(1, 3000),
    max_tokens=st.one_of(st.none(), st.integers(1, 800)),
    usage=st.booleans(),
    usage_scale=st.sampled_from([1.0, 1.0, 0.5, 0.1]),
    stream=st.booleans(),
    abandon=st.booleans(),
    ignore_cap=st.booleans(),
)


def config(home: Path, paid: StubProvider, free: StubProvider) -> Any:
    def model(name: str, url: str, tier: str, price: tuple[float, float]) -> dict[str, Any]:
        return {
            "name": name, "tier": tier, "litellm_model": f"openai/{name}", "api_base": url,
            "api_key_env": "STUB_API_KEY", "input_cost_per_mtok": price[0],
            "output_cost_per_mtok": price[1], "timeout_s": 5.0,
        }  # fmt: skip

    return parse_config(
        {
            "embedded": {"enabled": False},
            "health": {"enabled": False},
            "store": {"path": str(home / "orchestra.db")},
            "budget": {"daily_usd": BUDGET},
            "models": [
                model("paid", paid.url, "cloud", (IN_PRICE, OUT_PRICE)),
                model("free", free.url, "local", (0.0, 0.0)),
            ],
        }
    )


def reply(words: int) -> str:
    """`words` different words: a stream of one word repeated trips LiteLLM's loop detector."""
    return " ".join(f"w{i}" for i in range(words))


async def play(script: list[Call], paid: StubProvider, free: StubProvider) -> None:
    first_request = len(paid.requests)  # the stub outlives one example
    with tempfile.TemporaryDirectory() as home:
        async with Orchestra(config(Path(home), paid, free), agents=[WantsCloud()]) as orc:
            for call in script:
                paid.behaviour = Behaviour(
                    reply=reply(call.words),
                    usage=call.usage,
                    usage_scale=call.usage_scale,
                    # A provider that runs past its cap, streamed or not: a stream is cut at
                    # it; a whole answer is held whole, or streamed and cut when it cannot be.
                    ignore_cap=call.ignore_cap,
                )
                hints = {"max_tokens": call.max_tokens} if call.max_tokens else {}
                if not call.stream:
                    await orc.complete(PROMPTS[call.prompt], **hints)
                    continue
                async with orc.stream(PROMPTS[call.prompt], **hints) as stream:
                    async for _ in stream:
                        if call.abandon:
                            break
            summary = await orc.spend_summary()
            history = await orc.history(limit=100)
        assert summary["total_usd"] <= BUDGET + 1e-12, (summary, script)
        assert summary["reserved_usd"] == 0.0, "every reservation settled"
        assert_no_answer_under_billed(
            list(reversed(history)), script, paid.requests[first_request:]
        )


def assert_no_answer_under_billed(
    history: list[dict[str, Any]], script: list[Call], sent: list[dict[str, Any]]
) -> None:
    """Each answer the paid provider gave is on the ledger at no less than it billed: its usage
    (words, in the stub) when reported, and the words it sent when not. (A stream left after its
    first piece is billed for what was read before it was closed: the stub, which bills the
    whole answer it wrote, does not say what that was.)"""
    calls_to_paid = iter(sent)
    for entry, call in zip(history, script, strict=True):
        hits = [a for a in entry["attempts"] if a["model"] == "paid" and not a["skipped"]
                and a["error_kind"] != "budget"]  # fmt: skip
        bodies = [next(calls_to_paid)["body"] for _ in hits]
        if entry["model"] != "paid" or entry["status"] != "ok":
            continue
        body = bodies[-1]
        prompt = sum(len(m["content"].split()) for m in body["messages"])
        cap = body.get("max_completion_tokens") or body.get("max_tokens") or call.words
        answer = min(call.words, cap)
        billed = (prompt * IN_PRICE + answer * OUT_PRICE) / 1e6
        assert entry["cost_usd"] >= billed - 1e-15, (entry["cost_usd"], billed, call)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(script=st.lists(calls, min_size=1, max_size=6))
def test_the_budget_holds_whatever_the_answers(
    script: list[Call], stub: StubProvider, stub2: StubProvider
) -> None:
    asyncio.run(play(script, stub, stub2))
