"""The runtime end to end: stub providers on 127.0.0.1, through LiteLLM, recorded in SQLite."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import STUB_KEY, model_toml

from orchestra import (
    Agent,
    AllCandidatesFailed,
    NoAllowedModelError,
    Orchestra,
    Request,
    RequestError,
    StreamBroken,
    Tier,
    UnknownModelError,
    Verdict,
)
from orchestra.testing import Behaviour, FunctionBackend, StubProvider, refused_url


class Raising(Agent):
    name = "raiser"

    async def check(self, request: Request | None) -> Verdict:
        raise RuntimeError("sensor on fire")


class ForbidCloud(Agent):
    name = "no-cloud"

    async def check(self, request: Request | None) -> Verdict:
        return self.verdict(allowed=frozenset({Tier.LOCAL, Tier.EDGE}), reason="cloud banned")


# Tests of the runtime's own logic answer through a function: no HTTP server, no LiteLLM.
UNUSED_URL = "http://127.0.0.1:9/v1"


def PARIS() -> FunctionBackend:
    return FunctionBackend(lambda call: "Paris")


def expected_cost(prompt_tokens: int, completion_tokens: int) -> float:
    return (prompt_tokens * 0.15 + completion_tokens * 0.60) / 1e6


async def test_cloud_stub_answers_and_everything_is_recorded(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    config = write_config(model_toml("stub-cloud", stub.url))
    async with Orchestra(config=config) as orc:
        result = await orc.complete("What is the capital of France?")
        history = await orc.history()
        spend = await orc.spend_summary()
    assert result.text == "Paris"
    assert (result.model, result.tier) == ("stub-cloud", Tier.CLOUD)
    assert result.prompt_tokens > 0 and result.completion_tokens > 0
    assert result.cost_usd == pytest.approx(
        expected_cost(result.prompt_tokens, result.completion_tokens)
    )
    assert {v.agent for v in result.verdicts} == {
        "resource",
        "connectivity",
        "cost",
        "complexity",
        "privacy",
    }
    assert [c.model for c in result.decision.candidates] == ["stub-cloud"]
    # The stub saw a real OpenAI-style call with the key from the environment.
    assert stub.requests[-1]["headers"]["authorization"] == f"Bearer {STUB_KEY}"
    (entry,) = history
    assert entry["request_id"] == result.request_id and entry["status"] == "ok"
    assert entry["decision"]["candidates"][0]["model"] == "stub-cloud"
    assert {v["agent"] for v in entry["verdicts"]} == {v.agent for v in result.verdicts}
    assert spend["today_usd"] == pytest.approx(result.cost_usd)


async def test_failover_walks_past_a_failing_provider(
    stub: StubProvider, stub2: StubProvider, write_config: Callable[..., Path]
) -> None:
    stub.behaviour = Behaviour(kind="status", status=500)
    config = write_config(model_toml("broken", stub.url), model_toml("healthy", stub2.url))
    async with Orchestra(config=config) as orc:
        result = await orc.complete("hello")
    assert (result.model, result.text) == ("healthy", "Rome")
    first, retried, ok = result.attempts  # a 500 is retried once (after a backoff), then failover
    for failed in (first, retried):
        assert (failed.model, failed.ok, failed.error_kind, failed.status_code) == (
            "broken",
            False,
            "server",
            500,
        )
    assert first.retry_in_s is not None and retried.retry_in_s is None
    assert ok.ok and ok.model == "healthy"


@pytest.mark.parametrize(
    ("behaviour", "kind"),
    [
        (Behaviour(kind="status", status=429, retry_after_s=1), "rate_limit"),
        (Behaviour(kind="status", status=401, error_message="bad key"), "auth"),
        (Behaviour(kind="hang"), "timeout"),
        (Behaviour(kind="slow", delay_s=1.5), "timeout"),
        (Behaviour(kind="malformed"), "server"),
    ],
)
async def test_each_fault_is_classified_and_fails_over(
    behaviour: Behaviour,
    kind: str,
    stub: StubProvider,
    stub2: StubProvider,
    write_config: Callable[..., Path],
) -> None:
    stub.behaviour = behaviour
    config = write_config(
        model_toml("faulty", stub.url, timeout_s=0.5), model_toml("healthy", stub2.url)
    )
    async with Orchestra(config=config, agents=[]) as orc:
        result = await orc.complete("hello")
    assert result.model == "healthy"
    assert result.attempts[0].error_kind == kind


async def test_connectivity_removes_an_unreachable_tier(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    config = write_config(
        model_toml("lan-box", refused_url(), tier="edge"), model_toml("stub-cloud", stub.url)
    )
    async with Orchestra(config=config) as orc:
        result = await orc.complete("hello")
        with pytest.raises(NoAllowedModelError, match="connectivity"):
            await orc.complete("hello", model="lan-box")
    assert result.model == "stub-cloud"
    assert any(e.tier is Tier.EDGE and e.by == "connectivity" for e in result.decision.excluded)
    connectivity = next(v for v in result.verdicts if v.agent == "connectivity")
    assert connectivity.state == "degraded"


async def test_refused_connection_without_agents_fails_over(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    config = write_config(model_toml("gone", refused_url()), model_toml("stub-cloud", stub.url))
    async with Orchestra(config=config, agents=[]) as orc:
        result = await orc.complete("hello")
    assert result.attempts[0].error_kind == "connection"
    assert result.model == "stub-cloud"


async def test_every_candidate_failing_raises_and_is_recorded(
    stub: StubProvider, stub2: StubProvider, write_config: Callable[..., Path]
) -> None:
    stub.behaviour = stub2.behaviour = Behaviour(kind="status", status=503)
    config = write_config(model_toml("a", stub.url), model_toml("b", stub2.url))
    async with Orchestra(config=config) as orc:
        with pytest.raises(AllCandidatesFailed) as caught:
            await orc.complete("hello")
        history = await orc.history()
        spend = await orc.spend_summary()
    assert [a.model for a in caught.value.attempts] == ["a", "a", "b", "b"]  # each retried once
    (entry,) = history
    assert entry["status"] == "error" and entry["error_kind"] == "AllCandidatesFailed"
    assert [a["model"] for a in entry["attempts"]] == ["a", "a", "b", "b"]
    assert len(entry["verdicts"]) == 5  # the five built-in agents on by default
    assert spend["today_usd"] == 0 and spend["answered_requests"] == 0


async def test_a_raising_agent_is_recorded_and_ignored(write_config: Callable[..., Path]) -> None:
    config = write_config(model_toml("stub-cloud", UNUSED_URL))
    async with Orchestra(config=config, agents=[], backend=PARIS()) as orc:
        orc.hook_agent(Raising())
        result = await orc.complete("hello")
        (entry,) = await orc.history()
    raiser = next(v for v in result.verdicts if v.agent == "raiser")
    assert raiser.state == "error" and raiser.neutral and "sensor on fire" in raiser.reason
    assert result.text == "Paris"
    stored = next(v for v in entry["verdicts"] if v["agent"] == "raiser")
    assert stored["state"] == "error"


async def test_a_hooked_agent_changes_the_decision(write_config: Callable[..., Path]) -> None:
    config = write_config(model_toml("stub-cloud", UNUSED_URL))
    async with Orchestra(config=config, agents=[], backend=PARIS()) as orc:
        assert (await orc.complete("hello")).model == "stub-cloud"
        orc.hook_agent(ForbidCloud())
        with pytest.raises(NoAllowedModelError, match="no-cloud"):
            await orc.complete("hello")
        (failed, answered) = await orc.history()
    assert failed["status"] == "error" and failed["decision"] is None
    assert answered["status"] == "ok"


async def test_forced_and_unknown_models(write_config: Callable[..., Path]) -> None:
    config = write_config(model_toml("first", UNUSED_URL), model_toml("second", UNUSED_URL))
    async with Orchestra(config=config, agents=[], backend=PARIS()) as orc:
        result = await orc.complete("hello", model="second")
        with pytest.raises(UnknownModelError, match="first, second"):
            await orc.complete("hello", model="nope")
    assert result.model == "second"
    assert [c.model for c in result.decision.candidates] == ["second"]


@pytest.mark.parametrize(
    "prompt",
    ["", "   ", [{"role": "wizard", "content": "hi"}], [{"role": "system", "content": "only"}]],
)
async def test_malformed_requests_get_a_clear_error_and_lose_nothing(
    prompt: object, write_config: Callable[..., Path]
) -> None:
    config = write_config(model_toml("stub-cloud", UNUSED_URL))
    async with Orchestra(config=config, agents=[], backend=PARIS()) as orc:
        await orc.complete("first")
        with pytest.raises(RequestError, match="malformed request"):
            await orc.complete(prompt)  # type: ignore[arg-type]
        history = await orc.history()
    assert [e["status"] for e in history] == ["ok"]


async def test_secrets_never_reach_the_store_or_the_logs(
    stub: StubProvider,
    stub2: StubProvider,
    write_config: Callable[..., Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A provider that echoes the key back in its error, as some do.
    stub.behaviour = Behaviour(kind="status", status=401, error_message=f"Invalid key {STUB_KEY}")
    config = write_config(model_toml("leaky", stub.url), model_toml("ok", stub2.url))
    caplog.set_level(logging.DEBUG)
    async with Orchestra(config=config) as orc:
        result = await orc.complete("hello")
    assert result.attempts[0].error_kind == "auth"
    assert STUB_KEY not in (result.attempts[0].error or "")
    db = Path(orc._db_path)
    for path in db.parent.glob(db.name + "*"):
        assert STUB_KEY.encode() not in path.read_bytes()
    assert STUB_KEY not in caplog.text


async def test_prompts_are_not_stored_unless_asked(write_config: Callable[..., Path]) -> None:
    secret_prompt = "my diary entry: the eagle lands at dawn"
    config = write_config(model_toml("stub-cloud", UNUSED_URL))
    async with Orchestra(config=config, agents=[], backend=PARIS()) as orc:
        await orc.complete(secret_prompt)
        (entry,) = await orc.history()
    assert entry["features"]["chars"] == len(secret_prompt)
    db = Path(orc._db_path)
    assert all(b"eagle" not in p.read_bytes() for p in db.parent.glob(db.name + "*"))


async def test_history_and_spend_survive_a_restart(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    # The first answer (150 words) spends ~90 % of a $0.0001 budget; after a restart the
    # restored spend alone is what makes the cost agent refuse a second, small request. (Words
    # all different: the budget is too small to hold a whole answer, so the call is streamed to
    # be cut at its cap, and LiteLLM breaks a stream that repeats one chunk 100 times.)
    stub.behaviour = Behaviour(reply=" ".join(f"w{i}" for i in range(150)))
    config = write_config(
        model_toml("stub-cloud", stub.url), extra="[budget]\ndaily_usd = 0.0001\n"
    )
    async with Orchestra(config=config) as orc:
        first = await orc.complete("What is the capital of France?", max_tokens=160)
    assert first.cost_usd > 0.00008
    async with Orchestra(config=config) as orc:
        history = await orc.history()
        assert orc.spend.today() == pytest.approx(first.cost_usd)
        with pytest.raises(NoAllowedModelError, match="cost"):
            await orc.complete("again", max_tokens=30)
    assert history[0]["request_id"] == first.request_id


async def test_stream_fails_over_before_the_first_chunk(
    stub: StubProvider, stub2: StubProvider, write_config: Callable[..., Path]
) -> None:
    stub.behaviour = Behaviour(kind="status", status=500)
    stub2.behaviour = Behaviour(reply="Rome is the capital of Italy")
    config = write_config(model_toml("broken", stub.url), model_toml("healthy", stub2.url))
    async with Orchestra(config=config) as orc:
        stream = orc.stream("Capital of Italy?")
        pieces = [piece async for piece in stream]
        (entry,) = await orc.history()
    assert len(pieces) > 1 and "".join(pieces) == "Rome is the capital of Italy"
    assert stream.result is not None and stream.result.model == "healthy"
    assert [a.ok for a in stream.result.attempts] == [False, False, True]
    assert entry["stream"] is True and entry["status"] == "ok"


async def test_a_stream_broken_midway_ends_with_a_clear_error(
    stub: StubProvider, stub2: StubProvider, write_config: Callable[..., Path]
) -> None:
    stub.behaviour = Behaviour(kind="drop_stream", reply="one two three four", chunks_before_drop=2)
    config = write_config(model_toml("flaky", stub.url), model_toml("healthy", stub2.url))
    pieces: list[str] = []
    async with Orchestra(config=config, agents=[]) as orc:
        with pytest.raises(StreamBroken) as caught:
            async for piece in orc.stream("count"):
                pieces.append(piece)
        (entry,) = await orc.history()
    assert pieces and caught.value.partial == "".join(pieces)
    assert entry["status"] == "error" and entry["error_kind"] == "stream_broken"
    assert stub2.requests == []  # no failover once text has reached the caller


async def test_a_self_hosted_server_needs_no_key(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    # llama.cpp, vLLM or LM Studio on the LAN: an OpenAI-compatible base URL and no key at all.
    block = (
        f'[[models]]\nname = "lan-box"\ntier = "edge"\nlitellm_model = "openai/qwen"\n'
        f'api_base = "{stub.url}"\n'
    )
    async with Orchestra(config=write_config(block), agents=[]) as orc:
        result = await orc.complete("What is the capital of France?")
    assert (result.text, result.model) == ("Paris", "lan-box")
    assert stub.requests[-1]["headers"].get("authorization") == "Bearer no-key"
