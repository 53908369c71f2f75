"""The SDK's path (`OpenAIBackend`, aiohttp underneath) against servers that misbehave at the
transport: real sockets on 127.0.0.1, scripted byte by byte. What matters is what the failure
is classified as (`kind`: retried or not) and whether the provider may have billed (`sent`:
charged at the reservation or released), and that no connection is left open."""

from __future__ import annotations

import asyncio
import email.utils
import gc
import json
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from test_openai_backend import outcome

from orchestra.execution.backend import Backend, CallParams
from orchestra.execution.litellm_backend import LiteLLMBackend
from orchestra.execution.openai_backend import OpenAIBackend

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, dict[str, Any]], Awaitable[None]]


async def _request(reader: asyncio.StreamReader) -> dict[str, Any]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    body: dict[str, Any] = json.loads(await reader.readexactly(length))
    return body


class Scripted:
    """A server that reads each request, then plays `script` with it."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests = 0
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            body = await _request(reader)
            self.requests += 1
            await self.script(reader, writer, body)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


def _answer(body: bytes, content_type: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type
        + b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
    )  # fmt: skip


ANSWER = json.dumps({
    "id": "x", "object": "chat.completion", "created": 1, "model": "paid",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 6, "completion_tokens": 1, "total_tokens": 7},
}).encode()  # fmt: skip


def _chunk(text: str) -> bytes:
    chunk = {
        "id": "x", "object": "chat.completion.chunk", "created": 1, "model": "paid",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }  # fmt: skip
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


async def _not_utf8(_r: asyncio.StreamReader, writer: asyncio.StreamWriter, body: Any) -> None:
    """200, and an answer with bytes that are not UTF-8 (a garbled body, a proxy's mangling)."""
    if body.get("stream"):
        writer.write(_answer(b'data: {"x": "\xff\xfe"}\n\n', b"text/event-stream"))
    else:
        writer.write(_answer(ANSWER.replace(b"Paris", b"Par\xffis"), b"application/json"))
    await writer.drain()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("backend", [OpenAIBackend, LiteLLMBackend])
async def test_an_answer_that_is_not_utf8_was_sent_and_is_the_providers_fault(
    backend: Callable[[], Backend], stream: bool
) -> None:
    """The provider answered (and may have billed): charged at the reservation, and worth
    failing over, as a body that is not JSON is. It was classified as a request that could not
    be *encoded* (a `UnicodeError` along the causes: a `UnicodeDecodeError` is one too), so
    never sent: its reservation released, the request blamed, no failover."""
    server = Scripted(_not_utf8)
    async with server as url:
        chosen = backend()
        failed = await outcome(chosen, url, stream=stream)
        await chosen.close()
    assert server.requests == 1
    assert failed["sent"] is True and failed["retryable"], failed
    if isinstance(chosen, OpenAIBackend):
        assert failed["kind"] == "server", failed


class _ErrorBodyNeverEnds:
    """503 with a body that never comes whole: it stalls until the client lets go.
    `released` is set when the client closed the connection."""

    def __init__(self) -> None:
        self.answered = asyncio.Event()
        self.released = asyncio.Event()

    async def __call__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: Any
    ) -> None:
        writer.write(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"error": '
        )
        await writer.drain()
        self.answered.set()
        await reader.read()  # until the client closes
        self.released.set()


@pytest.mark.parametrize("how", ["timed out", "cancelled"])
async def test_a_streamed_call_whose_error_body_fails_lets_its_connection_go(how: str) -> None:
    """The SDK reads an error status's body before raising; when that read fails (a reset, a
    read timeout, the caller cancelling), the answer was left open: its aiohttp connection
    checked out of the pool until garbage-collected ("Unclosed connection")."""
    script = _ErrorBodyNeverEnds()
    backend = OpenAIBackend()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with Scripted(script) as url:
            if how == "cancelled":
                call = asyncio.ensure_future(outcome(backend, url, stream=True))
                await asyncio.wait_for(script.answered.wait(), 5)
                await asyncio.sleep(0.1)  # the SDK reads the error's body
                call.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await call
            else:
                params = CallParams(timeout_s=0.3, max_tokens=16)
                failed = await outcome(backend, url, stream=True, params=params)
                assert failed["sent"] is True, failed
            # The client hung up, before the backend (its pool) is closed.
            await asyncio.wait_for(script.released.wait(), 2)
            gc.collect()
        await backend.close()
        gc.collect()
    unclosed = [str(w.message) for w in caught if "Unclosed" in str(w.message)]
    assert not unclosed


async def _not_gzip(_r: asyncio.StreamReader, writer: asyncio.StreamWriter, body: Any) -> None:
    """200 saying `Content-Encoding: gzip` over a body that is not (a proxy's mangling)."""
    sse = _chunk("Paris") + b"data: [DONE]\n\n"
    payload, kind = (
        (sse, b"text/event-stream") if body.get("stream") else (ANSWER, b"application/json")
    )
    writer.write(
        _answer(payload, kind).replace(b"\r\n\r\n", b"\r\nContent-Encoding: gzip\r\n\r\n", 1)
    )
    await writer.drain()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_a_body_that_cannot_be_decompressed_is_a_connection_failure(stream: bool) -> None:
    """The SDK wraps httpx's `DecodingError` as a connection error in a whole answer, but a
    stream raises it bare: it was classified `unknown` there (not retried), unlike the same
    answer whole, or through LiteLLM."""
    backend = OpenAIBackend()
    async with Scripted(_not_gzip) as url:
        failed = await outcome(backend, url, stream=stream)
    await backend.close()
    assert (failed["kind"], failed["sent"], failed["retryable"]) == ("connection", True, True)


def _gateway_gave_up(status: bytes) -> Script:
    async def script(_r: asyncio.StreamReader, writer: asyncio.StreamWriter, body: Any) -> None:
        error = b'{"error": {"message": "upstream request timeout", "type": "server_error"}}'
        writer.write(_answer(error, b"application/json").replace(b"200 OK", status, 1))
        await writer.drain()

    return script


@pytest.mark.parametrize("status", [b"504 Gateway Timeout", b"524 A Timeout Occurred"])
@pytest.mark.parametrize("backend", [OpenAIBackend, LiteLLMBackend])
async def test_a_gateway_that_stopped_waiting_had_passed_the_request_on(
    backend: Callable[[], Backend], status: bytes
) -> None:
    """An OpenAI-compatible gateway (a proxy, Cloudflare) answering 504 or 524 forwarded the
    request, then gave up waiting: the provider behind it may bill it, as for a read that timed
    out here. It counted as refused (an error status): its reservation released, unrecorded."""
    chosen = backend()
    async with Scripted(_gateway_gave_up(status)) as url:
        failed = await outcome(chosen, url, stream=False)
    await chosen.close()
    code = int(status.split()[0])
    assert (failed["status"], failed["sent"]) == (code, True), failed
    if isinstance(chosen, OpenAIBackend):  # (LiteLLM makes a 504 its Timeout: kind timeout)
        assert failed["kind"] == "server" and failed["retryable"], failed


async def _encoding_bug(_r: asyncio.StreamReader, writer: asyncio.StreamWriter, body: Any) -> None:
    """A Python server's 500 that puts its exception's text in the message."""
    error = (
        b"{\"error\": {\"message\": \"'ascii' codec can't encode character '\\\\xe9' in position"
        b' 3: ordinal not in range(128)", "type": "InternalServerError", "code": 500}}'
    )
    writer.write(_answer(error, b"application/json").replace(b"200 OK", b"500 Oops", 1))
    await writer.drain()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("backend", [OpenAIBackend, LiteLLMBackend])
async def test_a_servers_500_about_an_encoding_is_the_servers_failure(
    backend: Callable[[], Backend], stream: bool
) -> None:
    """The words "codec can't encode" in a provider's error message (a self-hosted server's own
    bug, a vLLM or llama-cpp-python 500) made the call one that could not be sent: kind
    invalid_request, the request rejected, no failover to the next model."""
    chosen = backend()
    async with Scripted(_encoding_bug) as url:
        failed = await outcome(chosen, url, stream=stream)
    await chosen.close()
    assert (failed["kind"], failed["status"], failed["sent"]) == ("server", 500, False), failed


def _limited(header: bytes) -> Script:
    async def script(_r: asyncio.StreamReader, writer: asyncio.StreamWriter, body: Any) -> None:
        error = b'{"error": {"message": "slow down", "type": "rate_limit_exceeded"}}'
        answer = _answer(error, b"application/json").replace(b"200 OK", b"429 Too Many", 1)
        writer.write(answer.replace(b"\r\n\r\n", b"\r\n" + header + b"\r\n\r\n", 1))
        await writer.drain()

    return script


@pytest.mark.parametrize("form", ["http date", "milliseconds"])
@pytest.mark.parametrize("backend", [OpenAIBackend, LiteLLMBackend])
async def test_a_429_says_how_long_to_wait_in_any_form(
    backend: Callable[[], Backend], form: str
) -> None:
    """`Retry-After` may be an HTTP date (RFC 9110), and OpenAI-style servers send
    `retry-after-ms`: both were read as no wait given (the executor's own backoff, too short)."""
    if form == "http date":
        when = email.utils.formatdate(time.time() + 30, usegmt=True)
        header = b"Retry-After: " + when.encode()
    else:
        header = b"retry-after-ms: 30000"
    chosen = backend()
    async with Scripted(_limited(header)) as url:
        failed = await outcome(chosen, url, stream=False)
    await chosen.close()
    assert (failed["kind"], failed["status"], failed["sent"]) == ("rate_limit", 429, False)
    assert failed["retry_after_s"] is not None and 25 <= failed["retry_after_s"] <= 30, failed
