"""The embedded model's backend: HTTP to llama.cpp's OpenAI-compatible server (ours, on loopback).

A local answer never waits for LiteLLM (seconds to import), nor for an HTTP library: the calls
go over asyncio's own streams, one connection each, to 127.0.0.1. Measured on a cold
`orchestra run` (2-core machine): httpx would cost 63 ms of CPU before the first token (22 to
import it, 22 for httpcore at its first client, 19 at its first request), against ~410 ms for
llama.cpp alone to its first token. xllamacpp's in-process `handle_chat_completions` gives the
first token as fast (43 vs 42 ms p50 once loaded), but it holds a thread until the answer ends
and cannot be interrupted before its next chunk, whereas closing an HTTP connection stops
llama.cpp at once; and over HTTP, `StubProvider` stands in for llama.cpp in tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

from orchestra.core.errors import ProviderError, ProviderErrorKind, status_kind
from orchestra.core.model_spec import ModelSpec
from orchestra.core.request import Message
from orchestra.core.result import Usage
from orchestra.execution.backend import (
    Backend,
    CallParams,
    Completion,
    Endpoint,
    StreamPiece,
    answer_usage,
    chat_messages,
    empty_answer,
)
from orchestra.spend.estimate import cost_usd

# llama.cpp's error type for a prompt longer than its context.
_CONTEXT_ERROR_TYPE = "exceed_context_size_error"
_CONTEXT_WORDS = ("context size", "context length", "context window")
_MAX_HEADER_LINES = 100
_T = TypeVar("_T")


class EmbeddedBackend(Backend):
    """Calls an OpenAI-compatible server over plain HTTP on loopback (the embedded llama.cpp).

    Failures become `ProviderError`s as the LiteLLM backend's do: by HTTP status first, then
    timeout, connection, a stream dropped after its first text (`stream_broken`), a malformed or
    empty answer (`server`). Usage is the server's when it reports it, else counted here.
    `params.timeout_s` bounds connecting and each wait for bytes; the executor bounds the rest.
    """

    async def complete(
        self, spec: ModelSpec, endpoint: Endpoint, messages: Sequence[Message], params: CallParams
    ) -> Completion:
        url, headers, body = _call(spec, endpoint, messages, params, stream=False)
        try:
            async with _post(url, headers, body, params.timeout_s) as response:
                data = await response.read()
                if response.status != 200:
                    raise _status_error(spec, response.status, response.headers, data)
            payload = json.loads(data)
            choices = payload.get("choices") or [{}]
            text = (choices[0].get("message") or {}).get("content") or ""
        except Exception as exc:
            raise _provider_error(exc, spec) from exc
        if not text:
            raise empty_answer(spec)
        return Completion(text=text, usage=_usage(spec, payload.get("usage"), messages, text))

    async def stream(
        self, spec: ModelSpec, endpoint: Endpoint, messages: Sequence[Message], params: CallParams
    ) -> AsyncIterator[StreamPiece]:
        url, headers, body = _call(spec, endpoint, messages, params, stream=True)
        parts: list[str] = []
        usage: dict[str, Any] | None = None
        ended = False
        try:
            # Leaving this block (the answer ended, the reader stopped, a timeout) closes the
            # connection, which stops llama.cpp generating.
            async with _post(url, headers, body, params.timeout_s) as response:
                if response.status != 200:
                    data = await response.read()
                    raise _status_error(spec, response.status, response.headers, data)
                async for line in response.lines():
                    if not line.startswith("data:"):
                        continue  # blank separators, ": keep-alive" comments
                    data_text = line[5:].strip()
                    if data_text == "[DONE]":
                        ended = True
                        break
                    chunk = json.loads(data_text)
                    if not isinstance(chunk, dict):
                        raise ValueError(f"a stream event that is not an object: {data_text[:80]}")
                    if "error" in chunk:
                        raise _event_error(spec, chunk["error"])
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or ():
                        ended = ended or bool(choice.get("finish_reason"))
                        if text := (choice.get("delta") or {}).get("content"):
                            parts.append(text)
                            yield StreamPiece(text=text)
        except Exception as exc:
            raise _provider_error(exc, spec, started=bool(parts)) from exc
        if not ended:  # the body ended cleanly but the answer did not: cut by something between
            kind: ProviderErrorKind = "stream_broken" if parts else "server"
            raise ProviderError(
                f"{spec.name}: the stream ended before the answer did", kind=kind, model=spec.name
            )
        if not parts:
            raise empty_answer(spec)
        yield StreamPiece(usage=_usage(spec, usage, messages, "".join(parts)))


class _Dropped(ConnectionError):
    """The server closed the connection before the end of its answer."""


class _Response:
    """An HTTP/1.1 response being read: status, lower-cased headers, then the body."""

    def __init__(
        self, reader: asyncio.StreamReader, status: int, headers: dict[str, str], timeout_s: float
    ) -> None:
        self.status, self.headers = status, headers
        self._reader, self._timeout_s = reader, timeout_s

    async def read(self) -> bytes:
        return b"".join([piece async for piece in self._body()])

    async def lines(self) -> AsyncIterator[str]:
        """The body's lines (SSE), decoded as UTF-8, as they arrive."""
        pending = b""
        async for piece in self._body():
            pending += piece
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield line.rstrip(b"\r").decode("utf-8")
        if pending:
            yield pending.rstrip(b"\r").decode("utf-8")

    async def _body(self) -> AsyncIterator[bytes]:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            while True:
                size = int((await self._line()).split(b";")[0].strip(), 16)  # ValueError: garbled
                if size == 0:
                    return  # a trailer may follow; the connection closes with this response
                yield await self._exactly(size)
                await self._exactly(2)  # the chunk's CRLF
        length = self.headers.get("content-length")
        if length is not None:
            yield await self._exactly(int(length))
            return
        while piece := await self._wait(self._reader.read(65536)):  # until the server closes
            yield piece

    async def _line(self) -> bytes:
        line = await self._wait(self._reader.readline())
        if not line.endswith(b"\n"):
            raise _Dropped("the connection closed before the end of the answer")
        return line

    async def _exactly(self, n: int) -> bytes:
        try:
            return await self._wait(self._reader.readexactly(n))
        except asyncio.IncompleteReadError:
            raise _Dropped("the connection closed before the end of the answer") from None

    async def _wait(self, step: Awaitable[_T]) -> _T:
        async with asyncio.timeout(self._timeout_s):
            return await step


@contextlib.asynccontextmanager
async def _post(
    url: str, headers: dict[str, str], body: bytes, timeout_s: float
) -> AsyncIterator[_Response]:
    """POST `body` to a plain-HTTP `url` on its own connection, closed when the block ends."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"the embedded backend calls plain http:// URLs, not {url!r}")
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        head = [f"POST {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
        head += [f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
        writer.write("\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + body)
        response = _Response(reader, 0, {}, timeout_s)
        await response._wait(writer.drain())
        status_line = await response._line()
        fields = status_line.decode("latin-1").split(None, 2)
        if len(fields) < 2 or not fields[0].startswith("HTTP/") or not fields[1].isdigit():
            raise ValueError(f"not an HTTP response: {status_line[:80]!r}")
        response.status = int(fields[1])
        for _ in range(_MAX_HEADER_LINES):
            line = (await response._line()).decode("latin-1").strip()
            if not line:
                break
            name, _, value = line.partition(":")
            response.headers[name.strip().lower()] = value.strip()
        yield response
    finally:
        writer.close()  # not awaited: a closing socket needs no more of this task's time


def _call(
    spec: ModelSpec,
    endpoint: Endpoint,
    messages: Sequence[Message],
    params: CallParams,
    *,
    stream: bool,
) -> tuple[str, dict[str, str], bytes]:
    """The URL, headers and JSON body of one chat call."""
    body: dict[str, Any] = {
        "model": spec.litellm_model.removeprefix("openai/"),
        "messages": chat_messages(messages, spec.system_prompt),
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    if params.max_tokens is not None:
        body["max_tokens"] = params.max_tokens
    if params.temperature is not None:
        body["temperature"] = params.temperature
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if endpoint.api_key:
        headers["Authorization"] = f"Bearer {endpoint.api_key}"
    try:
        content = json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate: the request's fault, nothing is sent
        raise ProviderError(
            f"{spec.name}: the request could not be sent: {exc}",
            kind="invalid_request",
            model=spec.name,
        ) from None
    return f"{(endpoint.api_base or '').rstrip('/')}/chat/completions", headers, content


def _provider_error(exc: Exception, spec: ModelSpec, *, started: bool = False) -> ProviderError:
    """Any failure of a call as a `ProviderError`; after the first text, `stream_broken`."""
    if isinstance(exc, ProviderError):
        error = exc
    elif isinstance(exc, TimeoutError):
        error = ProviderError(f"{spec.name}: no answer in time", kind="timeout")
    elif isinstance(exc, OSError):  # refused, reset, dropped mid-answer
        error = ProviderError(f"{spec.name}: {type(exc).__name__}: {exc}", kind="connection")
    elif isinstance(exc, ValueError | KeyError | TypeError | AttributeError):  # not the JSON
        error = ProviderError(
            f"{spec.name}: a malformed answer: {type(exc).__name__}: {_first_line(exc)}",
            kind="server",
        )
    else:
        error = ProviderError(
            f"{spec.name}: {type(exc).__name__}: {_first_line(exc)}", kind="unknown"
        )
    kind = error.kind
    if started and kind not in ("timeout", "invalid_request"):
        kind = "stream_broken"
    if kind == error.kind and error.model == spec.name:
        return error
    return ProviderError(
        str(error),
        kind=kind,
        model=spec.name,
        status_code=error.status_code,
        retry_after_s=error.retry_after_s,
    )


def _status_error(
    spec: ModelSpec, status: int, headers: dict[str, str], data: bytes
) -> ProviderError:
    """An HTTP error answer as a `ProviderError`: its kind from the status and llama.cpp's error
    type, its message from the body's `error.message`."""
    error: Any = None
    with contextlib.suppress(ValueError, AttributeError):  # not JSON, or not an object
        error = json.loads(data).get("error")
    if isinstance(error, dict):
        message, kind = str(error.get("message") or ""), _error_kind(status, error)
    else:
        message, kind = data.decode("utf-8", "replace"), status_kind(status) or "unknown"
    return ProviderError(
        f"{spec.name}: HTTP {status}: {_first_line(message) or 'no message'}",
        kind=kind,
        model=spec.name,
        status_code=status,
        retry_after_s=_retry_after(headers.get("retry-after")),
    )


def _event_error(spec: ModelSpec, error: Any) -> ProviderError:
    """An error sent as a stream event (after a 200): llama.cpp's `{"error": {code, message}}`."""
    fields = error if isinstance(error, dict) else {"message": str(error)}
    code = fields.get("code")
    status = code if isinstance(code, int) and 400 <= code <= 599 else 500
    return ProviderError(
        f"{spec.name}: {_first_line(str(fields.get('message') or 'an error event'))}",
        kind=_error_kind(status, fields),
        model=spec.name,
        status_code=status,
    )


def _error_kind(status: int, error: dict[str, Any]) -> ProviderErrorKind:
    text = str(error.get("message") or "").lower()
    if error.get("type") == _CONTEXT_ERROR_TYPE or any(w in text for w in _CONTEXT_WORDS):
        return "context_window"
    return status_kind(status) or "unknown"


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _first_line(exc: object) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else "")[:300]


def _usage(
    spec: ModelSpec, usage: dict[str, Any] | None, messages: Sequence[Message], text: str
) -> Usage:
    reported = usage if isinstance(usage, dict) else {}
    return answer_usage(
        _int(reported.get("prompt_tokens")), _int(reported.get("completion_tokens")), messages,
        text, lambda p, c: cost_usd(spec, p, c) or 0.0,
    )  # fmt: skip
