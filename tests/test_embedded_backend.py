"""The embedded model's backend over plain HTTP, against stub providers playing llama.cpp; and
the routing backend, which imports LiteLLM only when a model other than the embedded one is
tried."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from orchestra.core.errors import ProviderError
from orchestra.core.model_spec import ModelSpec
from orchestra.core.request import Message
from orchestra.core.tier import Tier
from orchestra.execution.backend import Backend, CallParams, Endpoint, StreamPiece
from orchestra.execution.embedded_backend import EmbeddedBackend
from orchestra.execution.routing_backend import RoutingBackend
from orchestra.testing import Behaviour, FunctionBackend, StubProvider
from orchestra.testing.stub_provider import refused_url

LOCAL = ModelSpec(name="embedded", tier=Tier.LOCAL, litellm_model="openai/embedded", embedded=True)
CLOUD = ModelSpec(name="cloud", tier=Tier.CLOUD, litellm_model="openai/cloud")
FRANCE = (Message(role="user", content="What is the capital of France?"),)
PARAMS = CallParams(timeout_s=2.0, max_tokens=16)


def endpoint(stub: StubProvider) -> Endpoint:
    return Endpoint(api_base=stub.url, api_key="sk-local")


async def pieces(backend: Backend, stub: StubProvider) -> list[StreamPiece]:
    return [p async for p in backend.stream(LOCAL, endpoint(stub), FRANCE, PARAMS)]


async def test_a_whole_answer_and_a_stream_with_the_servers_usage(stub: StubProvider) -> None:
    backend = EmbeddedBackend()
    done = await backend.complete(LOCAL, endpoint(stub), FRANCE, PARAMS)
    assert done.text == "Paris"
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (6, 1)
    assert not done.usage.estimated and done.usage.cost_usd == 0.0
    streamed = await pieces(backend, stub)
    assert "".join(p.text for p in streamed) == "Paris"
    assert streamed[-1].usage is not None and streamed[-1].usage.completion_tokens == 1
    sent = stub.requests[-1]
    assert sent["body"]["model"] == "embedded" and sent["body"]["max_tokens"] == 16
    assert sent["headers"]["authorization"] == "Bearer sk-local"


async def test_no_usage_reported_is_counted_here() -> None:
    with StubProvider(Behaviour(reply="Paris", usage=False)) as stub:
        done = await EmbeddedBackend().complete(LOCAL, endpoint(stub), FRANCE, PARAMS)
    assert done.usage.estimated and done.usage.prompt_tokens > 0


@pytest.mark.parametrize(
    ("behaviour", "kind"),
    [
        (Behaviour(kind="status", status=429, retry_after_s=3), "rate_limit"),
        (Behaviour(kind="status", status=500), "server"),
        (Behaviour(kind="status", status=400, error_message="the context size was exceeded"),
         "context_window"),
        (Behaviour(kind="malformed"), "server"),
        (Behaviour(kind="empty_stream"), "server"),
        (Behaviour(kind="drop_stream", chunks_before_drop=0), "connection"),
    ],
)  # fmt: skip
async def test_failures_become_provider_errors_of_their_kind(
    behaviour: Behaviour, kind: str
) -> None:
    with StubProvider(behaviour) as stub:
        with pytest.raises(ProviderError) as whole:
            await EmbeddedBackend().complete(LOCAL, endpoint(stub), FRANCE, PARAMS)
        with pytest.raises(ProviderError) as streamed:
            await pieces(EmbeddedBackend(), stub)
    for error in (whole.value, streamed.value):
        assert error.model == "embedded"
        assert error.kind == kind or (kind == "connection" and error.kind == "server"), error
    if behaviour.status == 429:
        assert whole.value.retry_after_s == 3


async def test_a_stream_cut_after_its_first_text_is_broken() -> None:
    cut = Behaviour(kind="drop_stream", reply_words=10, chunks_before_drop=2)
    with StubProvider(cut) as stub, pytest.raises(ProviderError) as caught:
        await pieces(EmbeddedBackend(), stub)
    assert caught.value.kind == "stream_broken"


async def test_a_silent_server_times_out_and_a_closed_port_is_a_connection_error() -> None:
    with StubProvider(Behaviour(kind="hang")) as stub, pytest.raises(ProviderError) as silent:
        await EmbeddedBackend().complete(LOCAL, endpoint(stub), FRANCE, CallParams(timeout_s=0.2))
    assert silent.value.kind == "timeout"
    closed = Endpoint(api_base=refused_url())
    with pytest.raises(ProviderError) as refused:
        await EmbeddedBackend().complete(LOCAL, closed, FRANCE, PARAMS)
    assert refused.value.kind == "connection"


# -- the routing backend ------------------------------------------------------------------------


class Remote:
    """Builds the remote backend (standing in for LiteLLM's import), counting the builds."""

    def __init__(self, fail: bool = False) -> None:
        self.built = 0
        self.fail = fail
        self.prepared: list[str] = []

    def __call__(self) -> Backend:
        self.built += 1
        if self.fail:
            raise ImportError("no module named litellm")
        outer = self

        class Prepared(FunctionBackend):
            async def prepare(self, specs: Sequence[ModelSpec]) -> None:
                outer.prepared += [s.name for s in specs]

        return Prepared(lambda call: f"{call.spec.name} answers")


async def test_the_embedded_model_never_loads_the_remote_backend(stub: StubProvider) -> None:
    remote = Remote()
    routing = RoutingBackend(remote=remote, preload=False)
    await routing.prepare([LOCAL, CLOUD])
    done = await routing.complete(LOCAL, endpoint(stub), FRANCE, PARAMS)
    assert done.text == "Paris" and remote.built == 0 and routing.remote is None


async def test_the_remote_backend_loads_once_for_concurrent_first_calls() -> None:
    remote = Remote()
    routing = RoutingBackend(embedded=FunctionBackend(lambda c: "local"), remote=remote)
    await routing.prepare([LOCAL, CLOUD])
    calls = [routing.complete(CLOUD, Endpoint(), FRANCE, PARAMS) for _ in range(5)]
    answers = await asyncio.gather(*calls)
    assert {a.text for a in answers} == {"cloud answers"} and remote.built == 1
    # A model added while running is prepared with the rest.
    added = CLOUD.model_copy(update={"name": "added"})
    await routing.prepare([added])
    assert remote.prepared == ["cloud", "added"]


async def test_preloading_starts_at_prepare_and_a_failed_load_is_a_provider_error() -> None:
    remote = Remote()
    routing = RoutingBackend(embedded=FunctionBackend(lambda c: "x"), remote=remote, preload=True)
    await routing.prepare([LOCAL, CLOUD])
    await routing.ready(CLOUD)
    assert remote.built == 1 and routing.remote is not None

    broken = RoutingBackend(embedded=FunctionBackend(lambda c: "x"), remote=Remote(fail=True))
    await broken.prepare([CLOUD])
    with pytest.raises(ProviderError) as caught:
        await broken.complete(CLOUD, Endpoint(), FRANCE, PARAMS)
    assert caught.value.kind == "unavailable" and "litellm" in str(caught.value)
