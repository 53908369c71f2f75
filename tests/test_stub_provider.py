"""StubProvider: raw HTTP behaviour, and what LiteLLM 1.106.2 raises for each fault it plays.

The LiteLLM assertions pin down observed behaviour (default aiohttp transport) that Orchestra's
exception mapping relies on; if a LiteLLM bump changes one, these tests say which.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before importing litellm: no network

import litellm
from litellm.exceptions import MidStreamFallbackError

from orchestra.testing import Behaviour, StubProvider, refused_url

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
TIMEOUT = 0.5


@pytest.fixture
def stub() -> Iterator[StubProvider]:
    with StubProvider() as provider:
        yield provider


async def complete(url: str, *, timeout_s: float = 2.0, **kwargs: Any) -> Any:
    return await litellm.acompletion(
        model="openai/stub",
        api_base=url,
        api_key="sk-test",
        messages=MESSAGES,
        timeout=timeout_s,
        max_retries=0,
        **kwargs,
    )


async def stream_texts(url: str, got: list[str], *, timeout_s: float = 2.0, **kwargs: Any) -> Any:
    """Consume a stream, appending each content delta to `got`; returns the last chunk."""
    last = None
    response = await complete(url, timeout_s=timeout_s, stream=True, **kwargs)
    async for chunk in response:
        last = chunk
        if chunk.choices and chunk.choices[0].delta.content:
            got.append(chunk.choices[0].delta.content)
    return last


def chain(exc: BaseException | None) -> list[str]:
    """Qualified class names along an exception's cause/context chain."""
    names: list[str] = []
    while exc is not None and len(names) < 20:
        names.append(f"{type(exc).__module__}.{type(exc).__name__}")
        exc = exc.__cause__ or exc.__context__
    return names


def raw(
    port: int, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request(method, path, json.dumps(body) if body is not None else None)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


CHAT = {"model": "m", "messages": MESSAGES}


def post_expecting_disconnect(port: int) -> None:
    """A chat POST whose connection the stub closes without answering (stopped mid-delay)."""
    with contextlib.suppress(http.client.RemoteDisconnected):
        raw(port, "POST", "/v1/chat/completions", CHAT)


# --- raw HTTP -------------------------------------------------------------------------------


def test_url_port_and_routes(stub: StubProvider) -> None:
    assert stub.url == f"http://127.0.0.1:{stub.port}/v1"
    assert raw(stub.port, "GET", "/health")[0] == 200
    status, _, body = raw(stub.port, "GET", "/v1/models")
    assert status == 200
    assert json.loads(body)["data"][0]["id"] == "stub"
    status, _, body = raw(stub.port, "GET", "/nope")
    assert status == 404
    assert json.loads(body)["error"]["message"]
    assert raw(stub.port, "POST", "/v1/chat/completions", None)[0] == 400
    assert stub.requests == []  # GETs and unparseable bodies are not chat requests


def test_url_before_start_raises() -> None:
    with pytest.raises(RuntimeError):
        _ = StubProvider().url


def test_keep_alive_serves_several_requests_on_one_connection(stub: StubProvider) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", stub.port, timeout=2)
    try:
        for stream in (False, True, False):
            conn.request("POST", "/v1/chat/completions", json.dumps({**CHAT, "stream": stream}))
            response = conn.getresponse()
            assert response.status == 200
            response.read()
        sock = conn.sock
        conn.request("GET", "/health")
        conn.getresponse().read()
        assert conn.sock is sock
    finally:
        conn.close()


def test_non_streaming_shape_and_usage(stub: StubProvider) -> None:
    _, headers, body = raw(stub.port, "POST", "/v1/chat/completions", CHAT)
    payload = json.loads(body)
    assert headers["content-type"] == "application/json"
    assert payload["object"] == "chat.completion"
    assert payload["model"] == "m"
    assert payload["id"].startswith("chatcmpl-")
    assert payload["choices"][0]["message"] == {"role": "assistant", "content": "Paris"}
    assert payload["usage"] == {"prompt_tokens": 6, "completion_tokens": 1, "total_tokens": 7}


def test_streaming_wire_format(stub: StubProvider) -> None:
    stub.behaviour = Behaviour(reply="Bonjour tout le monde")
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    _, headers, data = raw(stub.port, "POST", "/v1/chat/completions", body)
    assert headers["content-type"].startswith("text/event-stream")
    events = [e.removeprefix("data: ") for e in data.decode().split("\n\n") if e]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    texts = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert "".join(t for t in texts if t) == "Bonjour tout le monde"
    assert len([t for t in texts if t]) == 4
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 4


def test_status_sets_retry_after_and_openai_error_body(stub: StubProvider) -> None:
    stub.behaviour = Behaviour(kind="status", status=429, retry_after_s=2, error_message="slow")
    status, headers, body = raw(stub.port, "POST", "/v1/chat/completions", CHAT)
    assert status == 429
    assert headers["retry-after"] == "2"
    assert headers["retry-after-ms"] == "2000"
    error = json.loads(body)["error"]
    assert error["message"] == "slow"
    assert error["code"] == "rate_limit_exceeded"
    assert {"message", "type", "code"} <= error.keys()


def test_malformed_is_not_json(stub: StubProvider) -> None:
    stub.behaviour = Behaviour(kind="malformed")
    status, headers, body = raw(stub.port, "POST", "/v1/chat/completions", CHAT)
    assert status == 200
    assert headers["content-type"] == "application/json"
    with pytest.raises(ValueError):
        json.loads(body)


def test_drop_stream_closes_before_the_terminating_chunk(stub: StubProvider) -> None:
    stub.behaviour = Behaviour(kind="drop_stream", chunks_before_drop=1)
    conn = http.client.HTTPConnection("127.0.0.1", stub.port, timeout=2)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps({**CHAT, "stream": True}))
        response = conn.getresponse()
        with pytest.raises(http.client.IncompleteRead) as caught:
            response.read()
        assert b"data: " in caught.value.partial
        assert b"[DONE]" not in caught.value.partial
    finally:
        conn.close()


def test_enqueue_scripts_one_shot_behaviours(stub: StubProvider) -> None:
    stub.enqueue(Behaviour(kind="status", status=503), Behaviour(reply="second"))
    statuses = [raw(stub.port, "POST", "/v1/chat/completions", CHAT) for _ in range(3)]
    assert [s for s, _, _ in statuses] == [503, 200, 200]
    assert [json.loads(b)["choices"][0]["message"]["content"] for _, _, b in statuses[1:]] == [
        "second",
        "Paris",
    ]
    assert len(stub.requests) == 3


def test_hang_does_not_block_other_requests_and_stop_is_prompt() -> None:
    stub = StubProvider(Behaviour(kind="hang")).start()
    hung = socket.create_connection(("127.0.0.1", stub.port), timeout=5)
    idle = socket.create_connection(("127.0.0.1", stub.port), timeout=5)  # keep-alive, idle
    try:
        data = json.dumps(CHAT).encode()
        hung.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
            % (len(data), data)
        )
        deadline = time.monotonic() + 2
        while not stub.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(stub.requests) == 1
        assert raw(stub.port, "GET", "/health")[0] == 200  # hang is per connection
        started = time.monotonic()
        stub.stop()
        assert time.monotonic() - started < 1
        assert hung.recv(1024) == b""  # closed without an answer
        assert idle.recv(1024) == b""
    finally:
        hung.close()
        idle.close()
        stub.stop()


def test_slow_does_not_block_concurrent_requests() -> None:
    with StubProvider(Behaviour(kind="slow", delay_s=1.5)) as stub:
        slow = threading.Thread(target=post_expecting_disconnect, args=(stub.port,))
        slow.start()
        started = time.monotonic()
        assert raw(stub.port, "GET", "/health")[0] == 200
        assert time.monotonic() - started < 0.5
        started = time.monotonic()
    assert time.monotonic() - started < 1  # stop() interrupted the delay
    slow.join(timeout=2)


def test_restart_keeps_the_port() -> None:
    stub = StubProvider().start()
    url = stub.url
    stub.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", stub.port), timeout=1).close()
    stub.start()
    try:
        assert stub.url == url
        assert raw(stub.port, "GET", "/health")[0] == 200
    finally:
        stub.stop()


@pytest.mark.parametrize(
    "kwargs",
    [{"kind": "nope"}, {"delay_s": -1}, {"status": 200}, {"chunks_before_drop": -1}],
)
def test_behaviour_validates(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Behaviour(**kwargs)


def test_refused_url_has_nothing_listening() -> None:
    url = refused_url()
    port = int(url.removeprefix("http://127.0.0.1:").removesuffix("/v1"))
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


# --- through LiteLLM ------------------------------------------------------------------------


async def test_litellm_healthy(stub: StubProvider) -> None:
    response = await complete(stub.url)
    assert response.choices[0].message.content == "Paris"
    assert response.usage.prompt_tokens == 6
    assert response.usage.completion_tokens == 1
    assert response.model.endswith("stub")


async def test_litellm_streaming(stub: StubProvider) -> None:
    stub.behaviour = Behaviour(reply="The capital of France is Paris.")
    got: list[str] = []
    last = await stream_texts(stub.url, got, stream_options={"include_usage": True})
    assert len(got) == 6
    assert "".join(got) == "The capital of France is Paris."
    assert last.usage.completion_tokens == 6
    assert stub.requests[-1]["body"]["stream_options"] == {"include_usage": True}


async def test_litellm_records_request(stub: StubProvider) -> None:
    await complete(stub.url)
    [request] = stub.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["authorization"] == "Bearer sk-test"
    assert request["body"]["model"] == "stub"
    assert request["body"]["messages"] == MESSAGES


async def test_keep_alive_through_litellm(stub: StubProvider) -> None:
    for _ in range(3):
        await complete(stub.url)
    assert len(stub.requests) == 3


@pytest.mark.parametrize("stream", [False, True])
async def test_litellm_status_500(stub: StubProvider, stream: bool) -> None:
    stub.behaviour = Behaviour(kind="status", status=500)
    with pytest.raises(litellm.InternalServerError) as caught:
        await complete(stub.url, stream=stream)
    assert caught.value.status_code == 500
    assert "openai.InternalServerError" in chain(caught.value)
    assert caught.value.litellm_response_headers is not None  # a real response: headers kept


@pytest.mark.parametrize("stream", [False, True])
async def test_litellm_status_429_retry_after(stub: StubProvider, stream: bool) -> None:
    stub.behaviour = Behaviour(kind="status", status=429, retry_after_s=1.5)
    with pytest.raises(litellm.RateLimitError) as caught:
        await complete(stub.url, stream=stream)
    exc = caught.value
    assert exc.status_code == 429
    # Retry-After survives only on `litellm_response_headers`; `.response` is a synthetic
    # httpx.Response that LiteLLM builds without the upstream headers.
    assert exc.litellm_response_headers["retry-after"] == "1.5"
    assert "retry-after" not in exc.response.headers


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        # OpenAI's 401 body has type "invalid_request_error"; LiteLLM maps any such body to
        # BadRequestError unless the message contains "Incorrect API key provided".
        ("stub error", litellm.BadRequestError),
        ("Incorrect API key provided: sk-test", litellm.AuthenticationError),
    ],
)
async def test_litellm_status_401(stub: StubProvider, message: str, expected: type) -> None:
    stub.behaviour = Behaviour(kind="status", status=401, error_message=message)
    with pytest.raises(expected) as caught:
        await complete(stub.url)
    assert type(caught.value) is expected
    assert caught.value.status_code == 401
    assert "openai.AuthenticationError" in chain(caught.value)


@pytest.mark.parametrize("stream", [False, True])
async def test_litellm_slow_past_timeout(stub: StubProvider, stream: bool) -> None:
    stub.behaviour = Behaviour(kind="slow", delay_s=1.5)
    started = time.monotonic()
    with pytest.raises(litellm.Timeout) as caught:
        await complete(stub.url, timeout_s=TIMEOUT, stream=stream)
    assert TIMEOUT <= time.monotonic() - started < TIMEOUT + 0.5
    assert caught.value.status_code == 408
    assert "openai.APITimeoutError" in chain(caught.value)


async def test_litellm_slow_within_timeout(stub: StubProvider) -> None:
    stub.behaviour = Behaviour(kind="slow", delay_s=0.2)
    response = await complete(stub.url, timeout_s=1.5)
    assert response.choices[0].message.content == "Paris"


@pytest.mark.parametrize("stream", [False, True])
async def test_litellm_hang_times_out(stub: StubProvider, stream: bool) -> None:
    stub.behaviour = Behaviour(kind="hang")
    started = time.monotonic()
    with pytest.raises(litellm.Timeout) as caught:
        await complete(stub.url, timeout_s=TIMEOUT, stream=stream)
    assert time.monotonic() - started < TIMEOUT + 0.5
    assert caught.value.status_code == 408
    assert len(stub.requests) == 1


async def test_litellm_drop_stream(stub: StubProvider) -> None:
    stub.behaviour = Behaviour(kind="drop_stream", reply="The capital of France is Paris.")
    got: list[str] = []
    with pytest.raises(MidStreamFallbackError) as caught:
        await stream_texts(stub.url, got)
    exc = caught.value
    assert got == ["The ", "capital "]
    # A ServiceUnavailableError subclass, but status_code is 500 (taken from the wrapped
    # APIConnectionError), not 503.
    assert isinstance(exc, litellm.ServiceUnavailableError)
    assert exc.status_code == 500
    assert isinstance(exc.original_exception, litellm.APIConnectionError)
    assert exc.generated_content == "The capital "
    assert exc.is_pre_first_chunk is False
    assert "httpx.ReadError" in chain(exc)


async def test_litellm_drop_non_streaming(stub: StubProvider) -> None:
    stub.behaviour = Behaviour(kind="drop_stream")
    with pytest.raises(litellm.InternalServerError) as caught:
        await complete(stub.url)
    assert caught.value.status_code == 500
    assert "openai.APIConnectionError" in chain(caught.value)


async def test_litellm_malformed(stub: StubProvider) -> None:
    stub.behaviour = Behaviour(kind="malformed")
    with pytest.raises(litellm.InternalServerError) as caught:
        await complete(stub.url)
    assert caught.value.status_code == 500
    assert "json.decoder.JSONDecodeError" in chain(caught.value)


async def test_litellm_malformed_stream(stub: StubProvider) -> None:
    stub.behaviour = Behaviour(kind="malformed")
    got: list[str] = []
    with pytest.raises(MidStreamFallbackError) as caught:
        await stream_texts(stub.url, got)
    assert got == []
    assert caught.value.status_code == 500
    assert "json.decoder.JSONDecodeError" in chain(caught.value)


@pytest.mark.parametrize("stream", [False, True])
async def test_litellm_connection_refused(stream: bool) -> None:
    # Surprise: a refused connection surfaces as InternalServerError with status_code 500,
    # indistinguishable by class/status from a real 500; only the chain (or the absent
    # response headers) tells them apart.
    with pytest.raises(litellm.InternalServerError) as caught:
        await complete(refused_url(), stream=stream)
    assert caught.value.status_code == 500
    assert "openai.APIConnectionError" in chain(caught.value)
    assert "builtins.ConnectionRefusedError" in chain(caught.value)
    assert caught.value.litellm_response_headers is None


async def test_async_context_manager() -> None:
    async with StubProvider(Behaviour(reply="Lyon")) as stub:
        response = await complete(stub.url)
        assert response.choices[0].message.content == "Lyon"
        # The server thread does not depend on this loop: a blocking call in a thread works too.
        status, _, _ = await asyncio.to_thread(raw, stub.port, "GET", "/health")
        assert status == 200
    assert not stub.running
