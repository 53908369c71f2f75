"""The LiteLLM backend: the only module that imports LiteLLM or knows its exception types."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from contextvars import ContextVar, Token
from functools import cache
from typing import Any

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
from orchestra.execution.openai_compatible import KEYLESS, keyless_openai_server, litellm_listened
from orchestra.execution.openai_shapes import completion, stream_pieces
from orchestra.execution.provider_errors import provider_error

__all__ = ["LiteLLMBackend", "client_timeout", "import_litellm", "provider_error"]

log = logging.getLogger("orchestra.litellm")


@cache
def import_litellm() -> Any:
    """Import LiteLLM once, configured for offline use.

    The cost map must be read from LiteLLM's bundled copy (otherwise the import fetches it and
    stalls for seconds on a dead network), and tokenizers must never be downloaded.
    """
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    os.environ.setdefault("LITELLM_LOG", "ERROR")
    import litellm

    litellm.disable_hf_tokenizer_download = True
    litellm.suppress_debug_info = True
    litellm.telemetry = False
    litellm.drop_params = True
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    global _INTERNAL_CALL
    _INTERNAL_CALL = _internal_call_flag()
    return litellm


class LiteLLMBackend(Backend):
    """Calls every model through `litellm.acompletion`, streaming or not.

    Each call passes `timeout` and `max_retries=0` (LiteLLM's SDK would otherwise retry by itself
    and wait up to 6,000 s): retries and failover are the executor's job. The timeout passed is
    the attempt's, rounded up (see `client_timeout`): the executor holds each attempt to its
    exact time itself.
    """

    def __init__(self) -> None:
        self._litellm = import_litellm()
        self._unpriced: set[str] = set()

    async def prepare(self, specs: Sequence[ModelSpec]) -> None:
        for spec in specs:
            self.register(spec)

    def register(self, spec: ModelSpec) -> None:
        """Tell LiteLLM a model's price and window; local and edge models are free by default.

        Registering Ollama models also stops LiteLLM calling Ollama's `/api/show` for them.
        """
        priced = spec.input_cost_per_mtok is not None and spec.output_cost_per_mtok is not None
        if not priced and spec.tier is Tier.CLOUD:
            return
        provider, _, _ = spec.litellm_model.partition("/")
        self._litellm.register_model(
            {
                spec.litellm_model: {
                    "input_cost_per_token": (spec.input_cost_per_mtok or 0.0) / 1e6,
                    "output_cost_per_token": (spec.output_cost_per_mtok or 0.0) / 1e6,
                    "max_input_tokens": spec.context_window,
                    "max_tokens": spec.context_window,
                    "litellm_provider": provider,
                    "mode": "chat",
                }
            }
        )

    async def complete(
        self, spec: ModelSpec, endpoint: Endpoint, messages: Sequence[Message], params: CallParams
    ) -> Completion:
        token = self._quiet()
        try:
            response = await self._litellm.acompletion(
                **self._kwargs(spec, endpoint, messages, params)
            )
        except Exception as exc:
            raise provider_error(exc, spec) from exc
        finally:
            if token is not None:
                _INTERNAL_CALL.reset(token)  # type: ignore[union-attr]
        return completion(spec, response, messages, self._pricer(spec))

    async def stream(
        self, spec: ModelSpec, endpoint: Endpoint, messages: Sequence[Message], params: CallParams
    ) -> AsyncIterator[StreamPiece]:
        kwargs = self._kwargs(spec, endpoint, messages, params)
        kwargs.update(stream=True, stream_options={"include_usage": True})
        try:
            response = await self._litellm.acompletion(**kwargs)
        except Exception as exc:
            raise provider_error(exc, spec) from exc
        pieces = stream_pieces(spec, response, messages, self._pricer(spec))
        async with aclosing(pieces):  # type: ignore[type-var]
            async for piece in pieces:
                yield piece

    def _quiet(self) -> Token[bool] | None:
        """Skip LiteLLM's own success logging for this call when nobody listens to it: Orchestra
        records every call itself, and that logging (a task and a thread-pool job per call,
        pricing the answer again) costs about 0.3 ms a call. With callbacks configured (a user's
        Langfuse, say), they run as usual."""
        if _INTERNAL_CALL is None or litellm_listened():
            return None
        return _INTERNAL_CALL.set(True)

    def _kwargs(
        self, spec: ModelSpec, endpoint: Endpoint, messages: Sequence[Message], params: CallParams
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": spec.litellm_model,
            "messages": chat_messages(messages, spec.system_prompt),
            "timeout": client_timeout(params.timeout_s),
            "max_retries": 0,
        }
        if endpoint.api_base:
            kwargs["api_base"] = endpoint.api_base
        if endpoint.api_key:
            kwargs["api_key"] = endpoint.api_key
        elif keyless_openai_server(spec, endpoint):
            kwargs["api_key"] = KEYLESS
        if params.max_tokens is not None:
            kwargs["max_tokens"] = params.max_tokens
        if params.temperature is not None:
            kwargs["temperature"] = params.temperature
        return kwargs

    def _pricer(self, spec: ModelSpec) -> Callable[[int, int], float]:
        return lambda prompt, completion: self._cost(spec, prompt, completion)

    def _cost(self, spec: ModelSpec, prompt_tokens: int, completion_tokens: int) -> float:
        if spec.input_cost_per_mtok is not None and spec.output_cost_per_mtok is not None:
            return (
                prompt_tokens * spec.input_cost_per_mtok
                + completion_tokens * spec.output_cost_per_mtok
            ) / 1e6
        try:
            prompt_cost, completion_cost = self._litellm.cost_per_token(
                model=spec.litellm_model,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
            )
        except Exception:
            if spec.name not in self._unpriced:
                self._unpriced.add(spec.name)
                log.warning("no price known for %s: its spend is recorded as 0", spec.name)
            return 0.0
        return float(prompt_cost + completion_cost)


def client_timeout(seconds: float) -> float:
    """`seconds` rounded up to a power of two (at least 1 s).

    LiteLLM keeps one HTTP client per (endpoint, key, timeout, ...): an attempt's timeout, a
    share of what is left of its request's deadline, differs on every call, and each new value
    builds a new client and a new connection (~0.85 ms on loopback, a TLS handshake on the
    internet). Rounded, a few values cover every deadline and the clients are reused; the
    executor's own timer stops the attempt at its exact time."""
    return float(2 ** max(0, math.ceil(math.log2(max(seconds, 1e-9)))))


def _internal_call_flag() -> ContextVar[bool] | None:
    """LiteLLM's flag for calls it makes itself (no success logging); None if it moved."""
    try:
        from litellm._internal_context import is_internal_call
    except ImportError:
        return None
    return is_internal_call if isinstance(is_internal_call, ContextVar) else None


_INTERNAL_CALL: ContextVar[bool] | None = None
