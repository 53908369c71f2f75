"""Resilient execution on real stub providers, through the OpenAI SDK and through LiteLLM:
breakers, retries, deadlines, rate limits, the response cache, balancing, and a load test with
providers failing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import model_toml

from orchestra import Agent, AllCandidatesFailed, Orchestra, Request, Verdict
from orchestra.testing import Behaviour, StubProvider

pytestmark = pytest.mark.usefixtures("through_each_backend")

FAST_RETRY = "[retry]\nbase_s = 0.01\ncap_s = 0.05\n"


async def test_a_dead_provider_opens_its_breaker_and_is_skipped_even_after_a_restart(
    stub: StubProvider, stub2: StubProvider, write_config: Callable[..., Path]
) -> None:
    stub.behaviour = Behaviour(kind="status", status=503)
    config = write_config(
        model_toml("dead", stub.url),
        model_toml("alive", stub2.url),
        extra=FAST_RETRY + "[breaker]\nfailure_threshold = 3\nrecovery_s = 600\n",
    )
    async with Orchestra(config=config, agents=[]) as orc:
        first = await orc.complete("one")  # dead fails twice (a retry), alive answers
        second = await orc.complete("two")  # the third failure opens the breaker
        third = await orc.complete("three")
    assert [a.model for a in first.attempts] == ["dead", "dead", "alive"]
    assert second.attempts[0].error_kind == "server"
    skip = third.attempts[0]
    assert (
        skip.skipped and skip.error_kind == "breaker_open" and "breaker open" in (skip.error or "")
    )
    calls_before = len(stub.requests)
    async with Orchestra(config=config, agents=[]) as orc:  # a restart remembers the dead provider
        after = await orc.complete("four")
        events = await orc._require_store().fetch(
            "SELECT model, from_state, to_state FROM breaker_events ORDER BY id"
        )
    assert after.attempts[0].error_kind == "breaker_open" and after.model == "alive"
    assert len(stub.requests) == calls_before
    assert ("dead", "closed", "open") in events


async def test_retry_after_is_honoured_then_the_same_model_answers(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    stub.enqueue(Behaviour(kind="status", status=429, retry_after_s=0.3))
    config = write_config(model_toml("limited", stub.url), extra=FAST_RETRY.replace("0.05", "1.0"))
    async with Orchestra(config=config, agents=[]) as orc:
        started = time.perf_counter()
        result = await orc.complete("hello")
        waited = time.perf_counter() - started
    limited, ok = result.attempts
    assert limited.error_kind == "rate_limit" and limited.retry_after_s == pytest.approx(0.3)
    assert limited.retry_in_s is not None and limited.retry_in_s >= 0.3
    assert ok.ok and result.model == "limited" and waited >= 0.3


async def test_the_request_deadline_bounds_every_attempt(
    stub: StubProvider, stub2: StubProvider, write_config: Callable[..., Path]
) -> None:
    stub.behaviour = stub2.behaviour = Behaviour(kind="hang")
    config = write_config(
        model_toml("hang-1", stub.url, timeout_s=30.0),
        model_toml("hang-2", stub2.url, timeout_s=30.0),
        extra=FAST_RETRY,
    )
    async with Orchestra(config=config, agents=[]) as orc:
        started = time.perf_counter()
        with pytest.raises(AllCandidatesFailed, match="deadline") as caught:
            await orc.complete("hello", timeout_s=0.8)
        took = time.perf_counter() - started
    assert took < 3.0  # 0.8 s deadline (plus LiteLLM's own reaction time), never 30 s per attempt
    assert caught.value.attempts and caught.value.attempts[0].error_kind == "timeout"


async def test_a_rate_limited_model_passes_the_call_to_the_next(
    stub: StubProvider, stub2: StubProvider, write_config: Callable[..., Path]
) -> None:
    config = write_config(
        model_toml("capped", stub.url, requests_per_minute=2, when_limited="next"),
        model_toml("spare", stub2.url),
    )
    async with Orchestra(config=config, agents=[]) as orc:
        results = [await orc.complete(f"call {i}") for i in range(4)]
    assert [r.model for r in results] == ["capped", "capped", "spare", "spare"]
    assert results[2].attempts[0].error_kind == "rate_limit"
    assert len(stub.requests) == 2


async def test_a_tokens_per_minute_limit_counts_the_real_usage(
    stub2: StubProvider, write_config: Callable[..., Path]
) -> None:
    # Booked before the call at its prompt (~1 token) since no max_tokens is set; the answer's
    # 60 tokens are only known after it, and must count against the limit from then on.
    with StubProvider(Behaviour(reply="word " * 60)) as wordy:
        config = write_config(
            model_toml("capped", wordy.url, tokens_per_minute=100, when_limited="next"),
            model_toml("spare", stub2.url),
        )
        async with Orchestra(config=config, agents=[]) as orc:
            results = [await orc.complete("hi") for _ in range(3)]
            assert orc.executor is not None
            booked = orc.executor.safeguards.limiters.get("capped")._token_total  # type: ignore[union-attr]
    assert [r.model for r in results] == ["capped", "capped", "spare"]
    assert results[2].attempts[0].error_kind == "rate_limit"
    used = sum(r.prompt_tokens + r.completion_tokens for r in results[:2])
    assert booked == pytest.approx(used), "the log holds real usage, not the estimates"


async def test_the_cache_answers_repeats_for_free(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    config = write_config(model_toml("stub-cloud", stub.url), extra="[cache]\nenabled = true\n")
    async with Orchestra(config=config, agents=[]) as orc:
        first = await orc.complete("What is the capital of France?")
        again = await orc.complete("What is the capital of France?")
        other = await orc.complete("What is the capital of Spain?")
        history = await orc.history()
    assert first.cost_usd > 0 and again.cost_usd == 0.0 and again.text == first.text
    assert again.attempts[-1].cached and not other.attempts[-1].cached
    assert len(stub.requests) == 2
    assert [e["attempts"][-1]["cached"] for e in history] == [False, True, False]


class DeniesOne(Agent):
    """Denies one model by name (as a privacy or budget verdict may)."""

    name = "denies-one"

    def __init__(self, model: str) -> None:
        super().__init__()
        self.model = model

    async def check(self, request: Request | None) -> Verdict:
        return self.verdict(denied_models=frozenset({self.model}), reason="not that one")


async def test_the_cache_never_answers_with_a_model_the_request_may_not_use(
    stub: StubProvider, stub2: StubProvider, write_config: Callable[..., Path]
) -> None:
    """The cache is keyed by tier: a hit from another model of the tier is refused when a
    verdict denies that model, or when the request forces another."""
    config = write_config(
        model_toml("one", stub.url), model_toml("two", stub2.url),
        extra="[cache]\nenabled = true\n",
    )  # fmt: skip
    async with Orchestra(config=config, agents=[]) as orc:
        assert (await orc.complete("What is the capital of France?")).model == "one"
        forced = await orc.complete("What is the capital of France?", model="two")
    assert forced.model == "two" and not forced.attempts[-1].cached
    async with Orchestra(config=config, agents=[DeniesOne("one")]) as orc:
        denied = await orc.complete("What is the capital of France?")
    assert denied.model == "two" and not any(a.cached and a.model == "one" for a in denied.attempts)
    assert len(stub.requests) == 1, "model one was asked once, then served from nowhere else"


async def test_round_robin_spreads_a_tier(
    stub: StubProvider, stub2: StubProvider, write_config: Callable[..., Path]
) -> None:
    config = write_config(
        model_toml("one", stub.url), model_toml("two", stub2.url),
        extra='[balancing]\ncloud = "round_robin"\n',
    )  # fmt: skip
    async with Orchestra(config=config, agents=[]) as orc:
        models = [(await orc.complete(f"q{i}")).model for i in range(4)]
    assert sorted(models) == ["one", "one", "two", "two"]


async def test_200_concurrent_requests_with_two_of_three_providers_failing(
    write_config: Callable[..., Path],
) -> None:
    with (
        StubProvider(Behaviour(kind="status", status=500)) as broken,
        StubProvider(Behaviour(kind="drop_stream")) as flaky,
        StubProvider(Behaviour(reply="fine")) as healthy,
    ):
        # Generous timeouts: 200 requests at once on two cores slow the healthy stub to seconds,
        # and timeouts on it would (rightly) open its breaker too.
        config = write_config(
            model_toml("broken", broken.url, timeout_s=30.0),
            model_toml("flaky", flaky.url, timeout_s=30.0),
            model_toml("healthy", healthy.url, timeout_s=30.0),
            extra=FAST_RETRY,
        )
        async with Orchestra(config=config, agents=[]) as orc:
            results = await asyncio.gather(*(orc.complete(f"request {i}") for i in range(200)))
            assert orc.executor is not None and orc.executor.safeguards.breakers is not None
            states = orc.executor.safeguards.breakers.states()
            calls = len(broken.requests), len(flaky.requests)
            # A second wave: the open breakers keep it away from the failing providers.
            later = await asyncio.gather(*(orc.complete(f"later {i}") for i in range(50)))
            spend = await orc.spend_summary()
            history = await orc.history(limit=1000)
    answered = results + later
    assert all(r.text == "fine" and r.model == "healthy" for r in answered)
    assert len(history) == 250 and all(e["status"] == "ok" for e in history)
    assert spend["today_usd"] == pytest.approx(sum(r.cost_usd for r in answered))
    assert spend["answered_requests"] == 250
    assert states == {"broken": "open", "flaky": "open", "healthy": "closed"}
    assert (len(broken.requests), len(flaky.requests)) == calls
    assert all(r.attempts[0].error_kind == "breaker_open" for r in later)


async def test_a_context_window_error_goes_to_a_bigger_window(
    stub: StubProvider, stub2: StubProvider, write_config: Callable[..., Path]
) -> None:
    stub.behaviour = Behaviour(
        kind="status",
        status=400,
        error_message="This model's maximum context length is 8192 tokens",
    )
    with StubProvider(Behaviour(reply="never")) as small:
        config = write_config(
            model_toml("small-a", stub.url, context_window=8192),
            model_toml("small-b", small.url, context_window=4096),
            model_toml("large", stub2.url, context_window=128000),
        )
        async with Orchestra(config=config, agents=[]) as orc:
            result = await orc.complete("a very long document ...")
    assert result.model == "large"
    overflow, skipped, _ = result.attempts
    assert overflow.error_kind == "context_window" and overflow.retry_in_s is None
    assert skipped.model == "small-b" and skipped.skipped and skipped.error_kind == "context_window"
    assert small.requests == []


def test_models_shows_an_open_breaker(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    import json
    import os
    import subprocess
    import sys

    stub.behaviour = Behaviour(kind="status", status=503)
    config = write_config(model_toml("dead", stub.url), extra=FAST_RETRY)

    async def trip() -> None:
        async with Orchestra(config=config, agents=[]) as orc:
            for _ in range(2):
                with pytest.raises(AllCandidatesFailed):
                    await orc.complete("hello")

    asyncio.run(trip())
    done = subprocess.run(
        [sys.executable, "-m", "orchestra.cli.main", "--config", str(config), "models", "--json"],
        capture_output=True, text=True, timeout=60, env=os.environ.copy(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[0])["breaker"] == "open"
