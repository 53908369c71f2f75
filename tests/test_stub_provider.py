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
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before importing litellm: no network

import litellm
from litellm.exceptions import MidStreamFallbackError

from orchestra.execution.litellm_backend import import_litellm
from orchestra.testing import Behaviour, StubProvider, refused_url

import_litellm()  # the backend's offline configuration (same module object as `litellm` above)
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
    port: int,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request(method, path, json.dumps(body) if body is not None else None, headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


CHAT = {"model": "m", "messages": MESSAGES}


def post_expecting_disconnect(port: int) -> None:
    """A chat POST whose connection the stub closes without answering (stopped mid-delay):
    the close may come before the body is sent (a reset) or after (no status line)."""
    with contextlib.suppress(ConnectionResetError):  # RemoteDisconnected is one too
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
    [
        {"kind": "nope"},
        {"delay_s": -1},
        {"status": 200},
        {"chunks_before_drop": -1},
        {"usage_scale": -0.5},
        {"usage_scale": float("inf")},
        {"trickle_every_s": 0},
        {"echo_request": True},  # only with kind="status"
        {"kind": "trickle", "echo_request": True},
        {"reply_words": -1},
    ],
)
def test_behaviour_validates(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Behaviour(**kwargs)


def open_chat(port: int, body: dict[str, Any], headers: bytes = b"") -> socket.socket:
    """Send a chat POST on a raw socket (2 s per recv) and return the socket, unread."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=2)
    data = json.dumps(body).encode()
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n%s"
        % (headers, len(data), data)
    )
    return sock


def read_until(sock: socket.socket, marker: bytes, count: int = 1) -> bytes:
    """Receive until `marker` was seen `count` times, or to EOF (a socket timeout raises)."""
    data = b""
    while data.count(marker) < count:
        piece = sock.recv(4096)
        if not piece:
            break
        data += piece
    return data


def sse_events(data: bytes) -> list[str]:
    return [e.removeprefix("data: ") for e in data.decode().split("\n\n") if e]


STREAM_WITH_USAGE = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}


def test_token_counts_are_words_of_the_message_texts(stub: StubProvider) -> None:
    stub.behaviour = Behaviour(reply_words=7)
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},  # 2
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Name three  rivers"},  # 3
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            },
            {"role": "assistant", "content": None},  # 0
            {"role": "user", "content": "In France,\nplease."},  # 3
        ],
    }
    payload = json.loads(raw(stub.port, "POST", "/v1/chat/completions", body)[2])
    assert payload["choices"][0]["message"]["content"] == "word " * 7
    assert payload["usage"] == {"prompt_tokens": 8, "completion_tokens": 7, "total_tokens": 15}
    streaming = {**body, "stream": True, "stream_options": {"include_usage": True}}
    data = raw(stub.port, "POST", "/v1/chat/completions", streaming)[2]
    chunks = [json.loads(e) for e in sse_events(data)[:-1]]
    texts = [c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]]
    assert "".join(texts) == "word " * 7
    assert chunks[-1]["usage"] == payload["usage"]


def test_reply_words_zero_is_an_empty_reply(stub: StubProvider) -> None:
    stub.behaviour = Behaviour(reply_words=0)
    payload = json.loads(raw(stub.port, "POST", "/v1/chat/completions", CHAT)[2])
    assert payload["choices"][0]["message"]["content"] == ""
    assert payload["usage"]["completion_tokens"] == 0
    assert Behaviour(reply="x", reply_words=2).text == "word word "


def test_usage_false_omits_usage_everywhere(stub: StubProvider) -> None:
    stub.behaviour = Behaviour(usage=False)
    payload = json.loads(raw(stub.port, "POST", "/v1/chat/completions", CHAT)[2])
    assert "usage" not in payload
    assert payload["choices"][0]["message"]["content"] == "Paris"
    events = sse_events(raw(stub.port, "POST", "/v1/chat/completions", STREAM_WITH_USAGE)[2])
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c and c["choices"] for c in chunks)


@pytest.mark.parametrize(("scale", "reported"), [(0.5, 5), (0.25, 2), (0.0, 0), (2.0, 20)])
def test_usage_scale_misreports_completion_tokens(
    stub: StubProvider, scale: float, reported: int
) -> None:
    stub.behaviour = Behaviour(reply_words=10, usage_scale=scale)
    expected = {"prompt_tokens": 6, "completion_tokens": reported, "total_tokens": 6 + reported}
    payload = json.loads(raw(stub.port, "POST", "/v1/chat/completions", CHAT)[2])
    assert payload["usage"] == expected
    assert payload["choices"][0]["message"]["content"] == "word " * 10
    events = sse_events(raw(stub.port, "POST", "/v1/chat/completions", STREAM_WITH_USAGE)[2])
    assert json.loads(events[-2])["usage"] == expected


def test_served_counts_what_was_billed_whatever_the_usage_reported(stub: StubProvider) -> None:
    stub.behaviour = Behaviour(reply_words=10, usage_scale=0.0)  # reports no answer tokens
    raw(stub.port, "POST", "/v1/chat/completions", CHAT)
    raw(stub.port, "POST", "/v1/chat/completions", {**CHAT, "max_tokens": 4})  # cut to 4
    raw(stub.port, "POST", "/v1/chat/completions", STREAM_WITH_USAGE)
    stub.behaviour = Behaviour(kind="status", status=500)  # an error bills nothing
    raw(stub.port, "POST", "/v1/chat/completions", CHAT)
    served = stub.served
    assert (served.calls, served.prompt_tokens, served.completion_tokens) == (4, 18, 24)
    assert served.cost_usd(1.0, 2.0) == pytest.approx((18 + 48) / 1e6)


def test_a_paced_stream_stops_generating_when_its_client_leaves(stub: StubProvider) -> None:
    stub.behaviour = Behaviour(reply_words=200, chunk_delay_s=0.01)
    sock = open_chat(stub.port, STREAM_WITH_USAGE)
    read_until(sock, b"word", 3)
    sock.close()
    deadline = time.monotonic() + 5
    while (before := stub.served.completion_tokens) and time.monotonic() < deadline:
        time.sleep(0.1)
        if stub.served.completion_tokens == before:
            break
    assert 3 <= stub.served.completion_tokens < 200


def test_empty_stream(stub: StubProvider) -> None:
    stub.behaviour = Behaviour(kind="empty_stream")
    status, headers, data = raw(stub.port, "POST", "/v1/chat/completions", STREAM_WITH_USAGE)
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["transfer-encoding"] == "chunked"
    assert data == b"data: [DONE]\n\n"
    status, headers, data = raw(stub.port, "POST", "/v1/chat/completions", CHAT)
    payload = json.loads(data)
    assert (status, headers["content-type"]) == (200, "application/json")
    assert payload.keys() == {"id", "object", "choices"}
    assert (payload["object"], payload["choices"]) == ("chat.completion", [])


@pytest.mark.parametrize("status", [401, 500])
def test_status_echo_request_leaks_body_and_key(stub: StubProvider, status: int) -> None:
    stub.behaviour = Behaviour(
        kind="status", status=status, error_message="Incorrect API key", echo_request=True
    )
    auth = {"Authorization": "Bearer sk-secret-123"}
    got, _, data = raw(stub.port, "POST", "/v1/chat/completions", CHAT, auth)
    message = json.loads(data)["error"]["message"]
    assert got == status
    assert message.startswith("Incorrect API key")
    assert json.dumps(CHAT) in message  # the body exactly as sent
    assert "Bearer sk-secret-123" in message


def test_trickle_stream_sends_chunks_then_only_keep_alive_comments(stub: StubProvider) -> None:
    stub.behaviour = Behaviour(
        kind="trickle", reply="The capital of France is Paris.", trickle_every_s=0.05
    )
    sock = open_chat(stub.port, STREAM_WITH_USAGE)
    try:
        data = read_until(sock, b": keep-alive\n\n", 3)
    finally:
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding: chunked" in head.lower()
    events = [json.loads(e) for e in re.findall(rb"data: (.*)\n\n", body)]
    assert [e["choices"][0]["delta"]["content"] for e in events] == ["The ", "capital "]
    assert body.rindex(b"data: ") < body.index(b": keep-alive\n\n")
    assert b"[DONE]" not in body
    assert b"usage" not in body


def test_trickle_non_streaming_sends_the_body_a_byte_at_a_time(stub: StubProvider) -> None:
    stub.behaviour = Behaviour(kind="trickle", trickle_every_s=0.05)
    sock = open_chat(stub.port, CHAT)
    try:
        data = read_until(sock, b"\r\n\r\n")
        started = time.monotonic()
        while time.monotonic() - started < 0.3:
            data += sock.recv(4096)  # a byte (or two) per recv
    finally:
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    headers = head.decode().lower()
    assert headers.startswith("http/1.1 200")
    assert "content-type: application/json" in headers
    length = int(re.findall(r"content-length: (\d+)", headers)[0])
    assert 2 <= len(body) <= 10 < length
    assert b'{"id": "chatcmpl-stub'.startswith(body)


def test_trickle_non_streaming_body_is_the_real_reply(stub: StubProvider) -> None:
    stub.behaviour = Behaviour(kind="trickle", reply="", trickle_every_s=0.001)
    payload = json.loads(raw(stub.port, "POST", "/v1/chat/completions", CHAT)[2])
    assert payload["choices"][0]["message"]["content"] == ""
    assert payload["usage"] == {"prompt_tokens": 6, "completion_tokens": 0, "total_tokens": 6}


def test_trickle_ends_when_the_client_disconnects(stub: StubProvider) -> None:
    stub.behaviour = Behaviour(kind="trickle", trickle_every_s=0.02)
    for body in (STREAM_WITH_USAGE, CHAT):
        sock = open_chat(stub.port, body)
        read_until(sock, b"\r\n\r\n")
        sock.close()
    assert stub._server is not None
    clients = stub._server._clients
    deadline = time.monotonic() + 1
    while clients and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not clients  # both handlers saw the broken pipe and returned


def test_stop_is_prompt_with_trickling_connections_open() -> None:
    stub = StubProvider(Behaviour(kind="trickle", trickle_every_s=0.05)).start()
    streaming = open_chat(stub.port, STREAM_WITH_USAGE)
    plain = open_chat(stub.port, CHAT)
    try:
        read_until(streaming, b": keep-alive")
        read_until(plain, b"\r\n\r\n")
        started = time.monotonic()
        stub.stop()
        assert time.monotonic() - started < 1
        for sock in (streaming, plain):
            read_until(sock, b"never sent")  # to EOF: raises if the socket stays open 2 s
    finally:
        streaming.close()
        plain.close()
        stub.stop()


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


# --- new behaviours through LiteLLM ---------------------------------------------------------


async def test_litellm_missing_usage_non_streaming_becomes_zeros(stub: StubProvider) -> None:
    stub.behaviour = Behaviour(usage=False)
    response = await complete(stub.url)
    assert response.choices[0].message.content == "Paris"
    # Not None: LiteLLM fills in Usage(0, 0, 0). A caller testing `usage is None` to decide to
    # estimate will record zero tokens (and zero cost) instead.
    assert response.usage is not None
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (0, 0)
    assert response.usage.total_tokens == 0


async def test_litellm_missing_usage_streaming_is_estimated_by_litellm(stub: StubProvider) -> None:
    stub.behaviour = Behaviour(usage=False)
    response = await complete(stub.url, stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in response]
    with_usage = [c for c in chunks if getattr(c, "usage", None) is not None]
    # The stub sent no usage chunk, yet LiteLLM yields a last chunk with usage it computed
    # itself (its own tokenizer, with per-message overhead): 14 prompt tokens where the stub's
    # word count is 6. That chunk has one choice with an empty delta, not empty `choices`.
    assert len(with_usage) == 1
    assert with_usage[0] is chunks[-1]
    usage = chunks[-1].usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (14, 1, 15)
    assert chunks[-1].choices[0].delta.content is None
    # Without include_usage, no chunk has a `usage` attribute at all.
    response = await complete(stub.url, stream=True)
    assert not [c async for c in response if hasattr(c, "usage")]


@pytest.mark.parametrize("stream", [False, True])
async def test_litellm_reports_under_reported_usage_as_is(stub: StubProvider, stream: bool) -> None:
    stub.behaviour = Behaviour(reply_words=10, usage_scale=0.5)
    if stream:
        got: list[str] = []
        last = await stream_texts(stub.url, got, stream_options={"include_usage": True})
        text, usage = "".join(got), last.usage
    else:
        response = await complete(stub.url)
        text, usage = response.choices[0].message.content, response.usage
    assert text == "word " * 10
    # LiteLLM passes the provider's numbers through: no recount against the text.
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (6, 5, 11)


async def test_litellm_reply_words_usage(stub: StubProvider) -> None:
    stub.behaviour = Behaviour(reply_words=4)
    response = await complete(stub.url)
    assert response.choices[0].message.content == "word word word word "
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (6, 4)


async def test_litellm_empty_non_streaming(stub: StubProvider) -> None:
    stub.behaviour = Behaviour(kind="empty_stream")
    response = await complete(stub.url)
    # No exception: an answer with no choices at all, zero usage, and no model.
    assert response.choices == []
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (0, 0)
    assert response.model is None


async def test_litellm_empty_stream(stub: StubProvider) -> None:
    stub.behaviour = Behaviour(kind="empty_stream")
    response = await complete(stub.url, stream=True)
    chunks = [chunk async for chunk in response]
    # No exception: LiteLLM makes up one final chunk (finish_reason "stop", no content).
    assert len(chunks) == 1
    assert chunks[0].choices[0].finish_reason == "stop"
    assert chunks[0].choices[0].delta.content is None
    # With include_usage, a second empty chunk follows, still without usage: unlike a stream
    # with content but no usage chunk, LiteLLM does not estimate one here.
    response = await complete(stub.url, stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in response]
    assert len(chunks) == 2
    assert not [c for c in chunks if getattr(c, "usage", None) is not None]
    assert not [c for c in chunks if c.choices and c.choices[0].delta.content]


@pytest.mark.parametrize(
    ("status", "expected"),
    [(500, litellm.InternalServerError), (401, litellm.BadRequestError)],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_litellm_echoed_key_and_prompt_reach_the_exception(
    stub: StubProvider, status: int, expected: type, stream: bool
) -> None:
    stub.behaviour = Behaviour(kind="status", status=status, echo_request=True)
    with pytest.raises(expected) as caught:
        await complete(stub.url, stream=stream)
    exc = caught.value
    assert type(exc) is expected
    # LiteLLM masks nothing: the key and the prompt are in str(exc), on its first line, and in
    # `.message`; anything that logs or stores the error text stores them.
    first_line = str(exc).splitlines()[0]
    for text in (first_line, exc.message):
        assert "Authorization: Bearer sk-test" in text
        assert "What is the capital of France?" in text


@pytest.mark.parametrize("stream", [False, True])
async def test_litellm_trickle_defeats_the_timeout(stub: StubProvider, stream: bool) -> None:
    stub.behaviour = Behaviour(
        kind="trickle", reply="The capital of France is Paris.", trickle_every_s=0.1
    )
    got: list[str] = []
    started = time.monotonic()
    # timeout=1 is a per-read timeout (time between bytes), not a deadline for the whole call:
    # a byte (or a keep-alive comment) every 0.1 s keeps it from ever firing, streaming or not,
    # so only the outer wait_for ends the call.
    call = stream_texts(stub.url, got, timeout_s=1) if stream else complete(stub.url, timeout_s=1)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(call, 2)
    assert time.monotonic() - started >= 2
    assert got == (["The ", "capital "] if stream else [])


async def test_litellm_trickle_slower_than_the_timeout_non_streaming(stub: StubProvider) -> None:
    stub.behaviour = Behaviour(kind="trickle", trickle_every_s=1.5)
    started = time.monotonic()
    # Headers arrive at once, the first body byte only after 1.5 s: the read timeout fires.
    with pytest.raises(litellm.Timeout) as caught:
        await asyncio.wait_for(complete(stub.url, timeout_s=TIMEOUT), 2)
    assert time.monotonic() - started < TIMEOUT + 0.5
    assert caught.value.status_code == 408


async def test_litellm_trickle_slower_than_the_timeout_streaming(stub: StubProvider) -> None:
    stub.behaviour = Behaviour(
        kind="trickle", reply="The capital of France is Paris.", trickle_every_s=1.5
    )
    got: list[str] = []
    started = time.monotonic()
    # A read timeout after the first chunks is not a litellm.Timeout but a MidStreamFallbackError
    # (status 500) wrapping an APIConnectionError "Timeout on reading data from socket".
    with pytest.raises(MidStreamFallbackError) as caught:
        await asyncio.wait_for(stream_texts(stub.url, got, timeout_s=TIMEOUT), 2)
    assert time.monotonic() - started < TIMEOUT + 0.5
    exc = caught.value
    assert got == ["The ", "capital "]
    assert exc.status_code == 500
    assert isinstance(exc.original_exception, litellm.APIConnectionError)
    assert "Timeout on reading data from socket" in str(exc)
    assert exc.generated_content == "The capital "
