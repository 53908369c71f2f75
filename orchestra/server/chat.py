"""`POST /v1/chat/completions`: one `chat.completion`, or a stream of `chat.completion.chunk`s.

A stream's response starts only once its first text has arrived: until then failover is
invisible and a failure is an ordinary error response with its status; the headers can then
name the model that is answering. The decision travels in the last chunk's `orchestra` object;
a failure after the first text is an SSE `error` event, then the end.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator

from starlette.requests import Request as HttpRequest
from starlette.responses import Response, StreamingResponse
from starlette.types import Send

from orchestra.core.request import Request
from orchestra.core.result import Result
from orchestra.response_stream import ResponseStream
from orchestra.server import shapes
from orchestra.server.body import read_json
from orchestra.server.errors import ApiError, api_error, request_id_headers
from orchestra.server.json_text import JsonResponse
from orchestra.server.metrics import NONE
from orchestra.server.state import ServerState, state_of


def decision_headers(request_id: str, tier: str, model: str) -> dict[str, str]:
    return {
        **request_id_headers(request_id),
        "x-orchestra-tier": tier,
        "x-orchestra-model": model,
    }


async def chat_completions(http: HttpRequest) -> Response:
    state = state_of(http)
    stream = False
    try:
        body = await read_json(http, state.config.server.max_body_bytes)
        chat, request = shapes.parse_chat(body, state.config.server.max_tokens)
        stream = chat.stream
        if request.model is not None:
            state.orc.catalog.get(request.model)  # 404 for a name the catalog does not hold
        if chat.stream:
            return await _start_stream(state, request, chat.include_usage)
        return await _complete(state, request)
    except ApiError as refused:
        state.metrics.failed(refused.code, stream=stream)
        raise
    except Exception as exc:
        failed = api_error(exc)
        state.metrics.failed(failed.code, stream=stream)
        raise failed from None


async def _complete(state: ServerState, request: Request) -> Response:
    started = time.perf_counter()
    with state.metrics.in_flight.track_inprogress():
        try:
            result = await state.orc.complete(request)
        except Exception as exc:
            raise api_error(exc, request) from None
    _answered(state, result, time.perf_counter() - started, stream=False)
    return JsonResponse(
        shapes.completion(result, request),
        headers=decision_headers(result.request_id, result.tier.value, result.model),
    )


async def _start_stream(state: ServerState, request: Request, include_usage: bool) -> Response:
    """Wait for the first text (or the failure before it), then start the event stream."""
    started = time.perf_counter()
    state.metrics.in_flight.inc()
    stream = state.orc.stream(request)
    pieces = aiter(stream)
    try:
        first: str | None = await anext(pieces)
    except StopAsyncIteration:
        first = None
    except BaseException as exc:
        state.metrics.in_flight.dec()
        if isinstance(exc, Exception):
            raise api_error(exc, request) from None
        raise
    spec = stream.model
    if spec is None and stream.result is not None:  # ended without text
        tier, model = stream.result.tier.value, stream.result.model
    else:
        tier, model = (spec.tier.value, spec.name) if spec is not None else (NONE, NONE)
    if first is not None:
        state.metrics.first_token.labels(tier, model).observe(time.perf_counter() - started)
    events = _ChatStream(state, request, stream, pieces, first, model, include_usage, started)
    headers = decision_headers(request.id, tier, model)
    headers |= {"cache-control": "no-cache", "x-accel-buffering": "no"}
    return EventStream(events, headers=headers)


class _ChatStream:
    """One streamed answer as server-sent events, and what ends it: its record (through the
    runtime), its metrics, and the in-flight count, whether it ends, breaks or is left."""

    def __init__(
        self,
        state: ServerState,
        request: Request,
        stream: ResponseStream,
        pieces: AsyncIterator[str],
        first: str | None,
        model: str,
        include_usage: bool,
        started: float,
    ) -> None:
        self.state, self.request, self.stream, self.pieces = state, request, stream, pieces
        self.first, self.model, self.include_usage, self.started = (
            first, model, include_usage, started
        )  # fmt: skip
        self.ended = self.closed = False

    async def events(self) -> AsyncGenerator[str, None]:
        rid, created, usage_on = self.request.id, int(time.time()), self.include_usage
        try:
            first = {"role": "assistant", "content": self.first or ""}
            yield shapes.chunk(rid, created, self.model, first, include_usage=usage_on)
            async for text in self.pieces:
                yield shapes.chunk(rid, created, self.model, {"content": text},
                                   include_usage=usage_on)  # fmt: skip
            result = self.stream.result
            assert result is not None, "a stream that ends has its result"
            info = shapes.result_info(result)
            finish = shapes.finish_reason(result, self.request)
            yield shapes.chunk(
                rid, created, result.model, {}, finish=finish, include_usage=usage_on,
                info=None if usage_on else info,
            )  # fmt: skip
            if usage_on:
                yield shapes.chunk(
                    rid, created, result.model, None, include_usage=True, usage_of=result,
                    info=info,
                )  # fmt: skip
            self.ended = True
            _answered(self.state, result, time.perf_counter() - self.started, stream=True)
            yield shapes.DONE
        except Exception as exc:  # StreamBroken, NotRecorded: the client has had text already
            self.ended = True
            error = api_error(exc, self.request)
            self.state.metrics.failed(error.code, stream=True, tier=self._tier(), model=self.model)
            yield shapes.event(error.body(), "error")

    async def close(self) -> None:
        """Once, however the response ended; a stream left by its client is closed here, so
        the runtime settles and records the call at once."""
        if self.closed:
            return
        self.closed = True
        self.state.metrics.in_flight.dec()
        if not self.ended:
            self.state.metrics.failed("cancelled", stream=True, tier=self._tier(), model=self.model)
        await self.stream.aclose()

    def _tier(self) -> str:
        return self.stream.model.tier.value if self.stream.model is not None else NONE


class EventStream(StreamingResponse):
    """Server-sent events that always close their stream when the response ends, even when the
    client left before the first byte (the events never started) or half-way."""

    media_type = "text/event-stream"

    def __init__(self, chat: _ChatStream, headers: dict[str, str]) -> None:
        self._chat = chat
        self._events = chat.events()
        super().__init__(self._events, headers=headers)

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            await self._events.aclose()
            await self._chat.close()


def _answered(state: ServerState, result: Result, seconds: float, *, stream: bool) -> None:
    state.metrics.answered(
        result.tier.value, result.model, seconds, stream=stream,
        prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
        cost_usd=result.cost_usd,
    )  # fmt: skip
