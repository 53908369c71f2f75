"""OpenAI-compatible servers called through the OpenAI SDK directly: which models go that way,
and that the way changes nothing but speed. Each provider behaviour (healthy, slow, 500, 429,
timeout, stream dropped mid-way, malformed, empty, no usage) is played by a real HTTP stub to
both backends, LiteLLM's and the SDK's, and must come out the same: the same text and usage,
or the same failure (kind, status, retry-after, whether the provider saw it, what it billed)."""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from orchestra import Orchestra
from orchestra.config import parse_config
from orchestra.core.errors import ProviderError
from orchestra.core.model_spec import ModelSpec
from orchestra.core.request import Message
from orchestra.core.tier import Tier
from orchestra.execution.backend import Backend, CallParams, Endpoint
from orchestra.execution.litellm_backend import LiteLLMBackend
from orchestra.execution.openai_backend import OpenAIBackend
from orchestra.execution.openai_compatible import called_directly
from orchestra.execution.routing_backend import RoutingBackend
from orchestra.testing import Behaviour, StubProvider
from orchestra.testing.stub_provider import refused_url

SPEC = ModelSpec(
    name="paid",
    tier=Tier.CLOUD,
    litellm_model="openai/paid",
    api_base="http://127.0.0.1:1/v1",
    input_cost_per_mtok=1.0,
    output_cost_per_mtok=2.0,
)
FRANCE = (Message(role="user", content="What is the capital of France?"),)
PARAMS = CallParams(timeout_s=1.0, max_tokens=16)


def test_which_models_go_through_the_sdk() -> None:
    assert called_directly(SPEC)
    assert not called_directly(SPEC.model_copy(update={"via_litellm": True}))
    assert not called_directly(SPEC.model_copy(update={"api_base": None}))  # OpenAI itself
    assert not called_directly(SPEC.model_copy(update={"litellm_model": "anthropic/claude"}))
    assert not called_directly(SPEC.model_copy(update={"embedded": True}))


def test_litellm_callbacks_send_every_model_through_litellm() -> None:
    """A user's LiteLLM callback (Langfuse, say) expects to see every call."""
    litellm: Any = LiteLLMBackend()._litellm  # imported and configured as the runtime does
    assert sys.modules["litellm"] is litellm
    litellm.callbacks = ["a-user-logger"]
    try:
        assert not called_directly(SPEC)
    finally:
        litellm.callbacks = []
    assert called_directly(SPEC)


def test_a_config_sets_via_litellm() -> None:
    config = parse_config(
        {"models": [{"name": "m", "tier": "edge", "litellm_model": "openai/m",
                     "api_base": "http://127.0.0.1:1/v1", "via_litellm": True}]}
    )  # fmt: skip
    assert config.models[0].via_litellm and not called_directly(config.models[0])


async def outcome(
    backend: Backend, url: str, *, stream: bool, params: CallParams = PARAMS
) -> dict[str, Any]:
    """What one call came to, in the terms that decide what Orchestra does next."""
    endpoint = Endpoint(api_base=url, api_key="sk-test")
    try:
        if stream:
            pieces = [p async for p in backend.stream(SPEC, endpoint, FRANCE, params)]
            text, last = "".join(p.text for p in pieces), pieces[-1]
            usage, finish = last.usage, last.finish_reason
        else:
            done = await backend.complete(SPEC, endpoint, FRANCE, params)
            text, usage, finish = done.text, done.usage, done.finish_reason
    except ProviderError as exc:
        billed = exc.billed
        return {
            "kind": exc.kind, "status": exc.status_code, "retry_after_s": exc.retry_after_s,
            "sent": exc.sent, "retryable": exc.retryable,
            "billed": None if billed is None else (billed.prompt_tokens, billed.completion_tokens),
        }  # fmt: skip
    assert usage is not None
    return {
        "text": text, "finish": finish, "tokens": (usage.prompt_tokens, usage.completion_tokens),
        "estimated": usage.estimated, "cost_usd": round(usage.cost_usd, 12),
    }  # fmt: skip


BEHAVIOURS = {
    "healthy": Behaviour(reply="Paris"),
    "slow": Behaviour(kind="slow", reply="Paris", delay_s=0.2),
    "long": Behaviour(reply_words=40),  # cut at max_tokens
    "no usage": Behaviour(reply="Paris", usage=False),
    "under-reported usage": Behaviour(reply_words=10, usage_scale=0.5),
    "500": Behaviour(kind="status", status=500),
    "429": Behaviour(kind="status", status=429, retry_after_s=3),
    "400": Behaviour(kind="status", status=400),
    "401": Behaviour(kind="status", status=401),
    "404": Behaviour(kind="status", status=404),
    "timeout": Behaviour(kind="hang"),
    "dropped at once": Behaviour(kind="drop_stream", chunks_before_drop=0),
    "dropped mid-way": Behaviour(kind="drop_stream", reply_words=8, chunks_before_drop=3),
    "malformed": Behaviour(kind="malformed"),
    "empty": Behaviour(kind="empty_stream"),
}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("name", list(BEHAVIOURS))
async def test_both_backends_agree(name: str, stream: bool) -> None:
    behaviour = BEHAVIOURS[name]
    outcomes = []
    for backend in (LiteLLMBackend(), OpenAIBackend()):
        with StubProvider(behaviour) as stub:
            outcomes.append(await outcome(backend, stub.url, stream=stream))
            assert len(stub.requests) == 1, "one call, no retry by the client"
            sent = stub.requests[0]
            assert sent["body"]["model"] == "paid" and sent["body"]["max_tokens"] == 16
            assert sent["headers"]["authorization"] == "Bearer sk-test"
        await backend.close()
    via_litellm, direct = outcomes
    if via_litellm.get("status") in MADE_UP_STATUSES and behaviour.kind != "status":
        # LiteLLM gives every failure a status, even one no server sent (408 for a timeout,
        # 500 for a cut connection or a body that is not JSON); the SDK's path keeps none.
        assert direct["status"] is None
        via_litellm["status"] = None
        if via_litellm["kind"] == "server" and direct["kind"] == "connection":
            via_litellm["kind"] = "connection"  # a stream cut before its first byte
    if name == "no usage" and stream:
        # LiteLLM counts a stream's tokens itself when the provider reports none, and passes
        # them off as reported; the SDK's path counts them here, marked estimated (erring high,
        # then checked against the text as any usage is).
        assert direct["estimated"] and not via_litellm["estimated"]
        assert direct["tokens"][1] >= via_litellm["tokens"][1]
        assert direct["cost_usd"] >= via_litellm["cost_usd"]
        return
    assert direct == via_litellm


MADE_UP_STATUSES = {408, 500}


async def test_a_server_that_cannot_be_reached_was_never_sent_anything() -> None:
    for backend in (LiteLLMBackend(), OpenAIBackend()):
        failed = await outcome(backend, refused_url(), stream=False)
        assert failed["kind"] == "connection" and failed["sent"] is False and failed["retryable"]
        await backend.close()


async def test_a_keyless_server_gets_a_placeholder_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    backend = OpenAIBackend()
    with StubProvider(Behaviour(reply="Paris")) as stub:
        done = await backend.complete(SPEC, Endpoint(api_base=stub.url), FRANCE, PARAMS)
        assert done.text == "Paris"
        assert stub.requests[0]["headers"]["authorization"] == "Bearer no-key"
    await backend.close()


async def test_the_runtime_calls_such_a_model_without_loading_litellm(tmp_path: Any) -> None:
    """The routing backend loads only the SDK's backend for a catalog of OpenAI-compatible
    servers; the answer is recorded as any other; closing the runtime closes its clients."""
    with StubProvider(Behaviour(reply="Paris")) as stub:
        config = parse_config(
            {"models": [{"name": "edge", "tier": "edge", "litellm_model": "openai/edge",
                         "api_base": stub.url}], "embedded": {"enabled": False}}
        )  # fmt: skip
        async with Orchestra(config, db_path=tmp_path / "o.db") as orc:
            result = await orc.complete("What is the capital of France?")
            backend = orc.executor.backend if orc.executor else None
            assert isinstance(backend, RoutingBackend)
            assert isinstance(backend.direct, OpenAIBackend) and backend.remote is None
            assert result.text == "Paris" and result.model == "edge"
            [record] = await orc.history(limit=5)
            assert record["request_id"] == result.request_id and record["model"] == "edge"
        assert backend.direct._clients == {}  # type: ignore[union-attr]


@pytest.fixture
def hangs_up() -> Iterator[str]:
    """A server that reads each request, then closes the connection without a word."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/v1"
    done.set()
    thread.join()
    server.close()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_a_server_that_hung_up_had_the_request(hangs_up: str, stream: bool) -> None:
    """It may have billed: the call counts as sent (charged at its reservation), and is worth
    retrying. (aiohttp's error is translated into an httpx `ConnectTimeout` on the way: the
    classification must believe aiohttp's own.)"""
    for backend in (LiteLLMBackend(), OpenAIBackend()):
        failed = await outcome(backend, hangs_up, stream=stream)
        assert (failed["kind"], failed["sent"], failed["retryable"]) == ("connection", True, True)
        await backend.close()


async def test_an_unpriced_cloud_model_is_recorded_free_and_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """As through LiteLLM: a cloud model priced nowhere costs 0, with one warning; an unpriced
    edge model is free, silently."""
    unpriced = SPEC.model_copy(
        update={"name": "nowhere", "input_cost_per_mtok": None, "output_cost_per_mtok": None}
    )
    edge = unpriced.model_copy(update={"name": "lan", "tier": Tier.EDGE})
    backend = OpenAIBackend()
    with StubProvider(Behaviour(reply="Paris")) as stub, caplog.at_level("WARNING"):
        for spec in (unpriced, unpriced, edge):
            done = await backend.complete(spec, Endpoint(api_base=stub.url), FRANCE, PARAMS)
            assert done.usage.cost_usd == 0.0 and done.usage.completion_tokens == 1
    await backend.close()
    warned = [r.getMessage() for r in caplog.records if "no price known" in r.getMessage()]
    assert warned == ["no price known for nowhere: its spend is recorded as 0"]
