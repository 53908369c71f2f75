"""OpenAI-compatible servers called through the official OpenAI SDK (no LiteLLM in between)."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from typing import Any

import httpx

from orchestra.core.model_spec import ModelSpec
from orchestra.core.request import Message
from orchestra.core.tier import Tier
from orchestra.execution.backend import (
    Backend,
    CallParams,
    Completion,
    Endpoint,
    StreamPiece,
    chat_messages,
)
from orchestra.execution.openai_compatible import KEYLESS
from orchestra.execution.openai_shapes import completion, stream_pieces
from orchestra.execution.provider_errors import provider_error
from orchestra.spend.estimate import cost_usd

log = logging.getLogger("orchestra.openai")


class OpenAIBackend(Backend):
    """Calls `openai/...` models at their `api_base` with `openai.AsyncOpenAI`, streaming or not.

    The request is the one LiteLLM would send for such a model (the name without `openai/`,
    the messages, `max_tokens`, `temperature`), and failures are classified by the same rules
    (`provider_errors`), so that which of the two backends made a call changes its speed, not
    its outcome. One client per (base, key), its connections kept alive; `max_retries=0`:
    retries and failover are the executor's. Prices are the catalog's (`ModelSpec`, completed
    from LiteLLM's table at load), so LiteLLM is never imported.
    """

    def __init__(self) -> None:
        import openai

        self._openai = openai
        self._clients: dict[tuple[str, str], Any] = {}

    async def complete(
        self, spec: ModelSpec, endpoint: Endpoint, messages: Sequence[Message], params: CallParams
    ) -> Completion:
        try:
            response = await self._client(endpoint).chat.completions.create(
                **_body(spec, messages, params), timeout=params.timeout_s
            )
        except Exception as exc:
            raise provider_error(exc, spec) from exc
        return completion(spec, response, messages, _pricer(spec))

    async def stream(
        self, spec: ModelSpec, endpoint: Endpoint, messages: Sequence[Message], params: CallParams
    ) -> AsyncIterator[StreamPiece]:
        try:
            response = await self._client(endpoint).chat.completions.create(
                **_body(spec, messages, params),
                stream=True,
                stream_options={"include_usage": True},
                timeout=params.timeout_s,
            )
        except Exception as exc:
            raise provider_error(exc, spec) from exc
        try:
            pieces = stream_pieces(spec, response, messages, _pricer(spec))
            async with aclosing(pieces):  # type: ignore[type-var]
                async for piece in pieces:
                    yield piece
        finally:  # a reader that stopped early: the connection is let go now
            await response.close()

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.close()

    def _client(self, endpoint: Endpoint) -> Any:
        # As LiteLLM does for these models: the configured key, else OPENAI_API_KEY, else none
        # (a self-hosted server wants none; the SDK refuses to call without one).
        key = endpoint.api_key or os.environ.get("OPENAI_API_KEY") or KEYLESS
        base = endpoint.api_base or ""
        client = self._clients.get((base, key))
        if client is None:
            client = self._openai.AsyncOpenAI(
                api_key=key, base_url=base, max_retries=0, http_client=self._http_client()
            )
            self._clients[(base, key)] = client
        return client

    def _http_client(self) -> Any:
        """aiohttp under the SDK (its `aiohttp` extra), as LiteLLM uses: httpx's own pool
        serves 1,000 concurrent calls ~1.6x slower (`bench/throughput.py`)."""
        try:
            client = self._openai.DefaultAioHttpClient()
        except RuntimeError:  # the extra is not installed: httpx's pool, slower under load
            return None
        client._transport = _Releasing(client._transport)
        return client


class _Releasing(httpx.AsyncBaseTransport):
    """httpx-aiohttp's transport, whose answers let their connection go when reading them fails.

    httpx's own pool closes a connection whose body could not be read; httpx-aiohttp's does
    not, and the SDK, reading the body of an error status on a streamed call (a 503 cut off, a
    read timed out, a caller that gave up meanwhile), then raises without closing the answer:
    the aiohttp connection stayed checked out of the pool ("Unclosed connection") until the
    garbage collector found it.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _ReleasingStream(response.stream)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class _ReleasingStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except BaseException:
            await self._inner.aclose()  # a broken connection: aiohttp closes it, not pools it
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()


def _body(spec: ModelSpec, messages: Sequence[Message], params: CallParams) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": spec.litellm_model.removeprefix("openai/"),
        "messages": chat_messages(messages, spec.system_prompt),
    }
    if params.max_tokens is not None:
        body["max_tokens"] = params.max_tokens
    if params.temperature is not None:
        body["temperature"] = params.temperature
    return body


def _pricer(spec: ModelSpec) -> Callable[[int, int], float]:
    """What tokens cost on `spec`: its price (the catalog's, or LiteLLM's table's), else 0, said
    once for a cloud model (local and edge ones are free)."""

    def price(prompt: int, completion: int) -> float:
        cost = cost_usd(spec, prompt, completion)
        if cost is not None:
            return cost
        if spec.tier is Tier.CLOUD and spec.name not in _UNPRICED:
            _UNPRICED.add(spec.name)
            log.warning("no price known for %s: its spend is recorded as 0", spec.name)
        return 0.0

    return price


_UNPRICED: set[str] = set()  # models already warned about
