"""Deadlines that mean it, failures classed by cause, and provider words that keep no secret:
through LiteLLM against stub providers on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import STUB_KEY, answer, model_toml
from test_cli import orchestra

from orchestra import Orchestra, RequestError, StreamBroken
from orchestra.execution.litellm_backend import client_timeout, import_litellm
from orchestra.execution.openai_backend import OpenAIBackend
from orchestra.execution.routing_backend import RoutingBackend
from orchestra.testing import Behaviour, StubProvider


@pytest.mark.slow
async def test_a_hanging_first_model_leaves_room_for_the_next_with_default_timeouts(
    stub: StubProvider, stub2: StubProvider, write_config: Callable[..., Path]
) -> None:
    stub.behaviour = Behaviour(kind="hang")
    # The default model timeout (60 s) and request deadline (120 s): nothing shortened.
    config = write_config(
        model_toml("hangs", stub.url, timeout_s=60.0), model_toml("healthy", stub2.url,
                                                                  timeout_s=60.0),
    )  # fmt: skip
    async with Orchestra(config=config, agents=[]) as orc:
        await orc.ready()
        started = time.monotonic()
        result = await orc.complete("hello")
        took = time.monotonic() - started
    assert (result.model, result.text) == ("healthy", "Rome")
    timed_out, ok = result.attempts
    assert (timed_out.model, timed_out.error_kind, timed_out.retry_in_s) == (
        "hangs",
        "timeout",
        None,
    ), "a timeout moves on: no retry of the same model into the deadline"
    assert ok.model == "healthy"
    assert took < 70, f"answered after {took:.0f} s"


async def test_an_attempt_leaves_the_next_candidate_half_the_deadline(
    stub: StubProvider, stub2: StubProvider, write_config: Callable[..., Path]
) -> None:
    stub.behaviour = Behaviour(kind="hang")
    config = write_config(
        model_toml("hangs", stub.url, timeout_s=30.0),
        model_toml("healthy", stub2.url, timeout_s=30.0),
        top="request_timeout_s = 3.0\n",
    )
    async with Orchestra(config=config, agents=[]) as orc:
        await orc.ready()
        started = time.monotonic()
        result = await orc.complete("hello")
        took = time.monotonic() - started
    assert result.model == "healthy"
    assert 1.3 < result.attempts[0].latency_ms / 1000 < 2.0, "half of the 3 s deadline"
    assert took < 3.0, f"took {took:.1f} s"


async def test_a_trickling_answer_is_cut_at_the_model_timeout_and_fails_over(
    stub: StubProvider, stub2: StubProvider, write_config: Callable[..., Path]
) -> None:
    # Headers, then a byte every 0.1 s: a per-read timeout never fires.
    stub.behaviour = Behaviour(kind="trickle", trickle_every_s=0.1)
    config = write_config(
        model_toml("trickles", stub.url, timeout_s=1.0), model_toml("healthy", stub2.url)
    )
    async with Orchestra(config=config, agents=[]) as orc:
        await orc.ready()
        started = time.monotonic()
        result = await orc.complete("hello")
        took = time.monotonic() - started
    assert result.model == "healthy"
    assert result.attempts[0].error_kind == "timeout"
    assert took < 3.0, f"took {took:.1f} s"


async def test_a_stream_that_goes_quiet_ends_at_its_idle_timeout_and_is_recorded(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    # One chunk, then only keep-alives, forever: the request deadline (30 s) is far off.
    stub.behaviour = Behaviour(kind="trickle", chunks_before_drop=1, trickle_every_s=0.1)
    config = write_config(
        model_toml("quiet", stub.url, idle_timeout_s=1.0), top="request_timeout_s = 30.0\n"
    )
    async with Orchestra(config=config, agents=[]) as orc:
        pieces: list[str] = []
        await orc.ready()
        started = time.monotonic()
        with pytest.raises(StreamBroken, match="no chunk within") as broken:
            async for text in orc.stream("hello"):
                pieces.append(text)
        took = time.monotonic() - started
        (entry,) = await orc.history()
        spend = await orc.spend_summary()
    assert pieces and broken.value.partial == "".join(pieces)
    assert took < 3.0, f"took {took:.1f} s"
    assert entry["status"] == "error" and entry["error_kind"] == "stream_broken"
    assert spend["total_usd"] > 0, "what it sent is billed"


async def test_a_stream_that_never_starts_fails_over_at_its_first_chunk_timeout(
    stub: StubProvider, stub2: StubProvider, write_config: Callable[..., Path]
) -> None:
    stub.behaviour = Behaviour(kind="hang")
    config = write_config(
        model_toml("silent", stub.url, first_chunk_timeout_s=1.0),
        model_toml("healthy", stub2.url),
    )
    async with Orchestra(config=config, agents=[]) as orc:
        await orc.ready()
        started = time.monotonic()
        stream = orc.stream("hello")
        text = "".join([t async for t in stream])
        took = time.monotonic() - started
    assert text == "Rome" and stream.result is not None and stream.result.model == "healthy"
    assert stream.result.attempts[0].error_kind == "timeout"
    assert took < 3.0


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("kind", ["empty_stream", "malformed"])
async def test_an_empty_or_malformed_answer_fails_over(
    kind: str,
    stream: bool,
    stub: StubProvider,
    stub2: StubProvider,
    write_config: Callable[..., Path],
) -> None:
    stub.behaviour = Behaviour(kind=kind)  # type: ignore[arg-type]
    config = write_config(model_toml("broken", stub.url), model_toml("healthy", stub2.url))
    async with Orchestra(config=config, agents=[]) as orc:
        result, text = await answer(orc, "hello", stream)
        spend = await orc.spend_summary()
    assert result is not None and (result.model, text) == ("healthy", "Rome")
    assert result.attempts[0].model == "broken" and not result.attempts[0].ok
    # A 200 with no text and no usage, or one that could not be read, may have been billed:
    # charged at its worst case, and told as part of what the request cost.
    by_model = {m["model"]: m for m in spend["month_by_model"]}
    assert by_model["broken"]["cost_usd"] > 0
    assert result.cost_usd == pytest.approx(spend["month_usd"])


async def test_text_that_cannot_be_sent_is_the_requests_fault(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    config = write_config(
        model_toml("healthy", stub.url), extra="[breaker]\nfailure_threshold = 1\n"
    )
    async with Orchestra(config=config, agents=[]) as orc:
        for _ in range(3):
            with pytest.raises(RequestError, match="lone surrogate"):
                await orc.complete("hello \ud800 there")
        result = await orc.complete("a normal prompt")
    assert stub.requests and len(stub.requests) == 1, "nothing was sent for the bad ones"
    assert result.model == "healthy", "the provider's breaker was never blamed"


def test_a_key_and_prompt_echoed_by_a_provider_reach_neither_the_database_nor_stderr(
    stub: StubProvider, stub2: StubProvider, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    # A provider that echoes the whole request and its Authorization header in a 401 body,
    # then, as a second candidate, one that does it in a 500.
    stub.behaviour = Behaviour(kind="status", status=401, echo_request=True)
    stub2.behaviour = Behaviour(kind="status", status=500, echo_request=True)
    config = write_config(model_toml("leaks-401", stub.url), model_toml("leaks-500", stub2.url),
                          extra="[breaker]\nfailure_threshold = 1\n")  # fmt: skip
    prompt = "zebra-quokka-7731 tell me about the eagle that lands at dawn"
    first = orchestra("--config", str(config), "-vv", "run", prompt)
    assert first.returncode == 1
    assert "***" in first.stderr and "[prompt]" in first.stderr, "the echo was there, masked"
    # The second run meets the breakers the first opened, with their (stored) reasons.
    second = orchestra("--config", str(config), "-vv", "run", prompt)
    assert second.returncode == 1 and "breaker open" in second.stderr
    for done in (first, second):
        assert STUB_KEY not in done.stderr and "zebra-quokka" not in done.stderr
    home = Path(str(tmp_path / "home"))
    files = list(home.glob("orchestra.db*"))
    assert files
    for path in files:
        data = path.read_bytes()
        assert STUB_KEY.encode() not in data, path
        assert b"zebra-quokka" not in data, path


async def test_attempts_with_different_deadlines_reuse_one_client(
    stub: StubProvider, stub2: StubProvider, write_config: Callable[..., Path]
) -> None:
    # With a candidate behind it, each attempt's timeout is half of what is left of its own
    # deadline: a new value every call. LiteLLM keeps one client per timeout, so passing it
    # unrounded built (and cached, up to 200) a new client on every call (~0.85 ms each).
    litellm = import_litellm()
    clients = getattr(getattr(litellm, "in_memory_llm_clients_cache", None), "cache_dict", None)
    if not isinstance(clients, dict):
        pytest.skip("this LiteLLM keeps its clients elsewhere")

    def ours() -> set[str]:
        return {k for k in clients if stub.url in str(k) and "timeout=" in str(k)}

    config = write_config(
        model_toml("first", stub.url, timeout_s=60.0, via_litellm=True),
        model_toml("second", stub2.url, via_litellm=True),
    )
    async with Orchestra(config=config, agents=[]) as orc:
        await orc.ready()
        before = ours()
        for i in range(6):
            result = await orc.complete("hello", timeout_s=20.0 + i * 1.37)
            assert result.model == "first"
        made = ours() - before
    assert len(made) == 1, f"a client per call: {len(made)}"


async def test_the_openai_sdk_keeps_one_client_per_server_whatever_the_deadline(
    stub: StubProvider, stub2: StubProvider, write_config: Callable[..., Path]
) -> None:
    """Through the OpenAI SDK the timeout goes with each request, not into the client."""
    config = write_config(
        model_toml("first", stub.url, timeout_s=60.0), model_toml("second", stub2.url)
    )
    async with Orchestra(config=config, agents=[]) as orc:
        for i in range(6):
            result = await orc.complete("hello", timeout_s=20.0 + i * 1.37)
            assert result.model == "first"
        backend = orc.executor.backend if orc.executor else None
        assert isinstance(backend, RoutingBackend) and isinstance(backend.direct, OpenAIBackend)
        assert list(backend.direct._clients) == [(stub.url, STUB_KEY)]


def test_the_client_timeout_is_rounded_up_to_a_few_values() -> None:
    assert [client_timeout(s) for s in (0.01, 1.0, 1.5, 29.999, 30.0, 59.9, 60.0, 61.0)] == [
        1.0, 1.0, 2.0, 32.0, 32.0, 64.0, 64.0, 64.0,
    ]  # fmt: skip
