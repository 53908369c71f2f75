"""The executor's backend: the one interface through which models are called."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from orchestra.core.errors import ProviderError
from orchestra.core.model_spec import ModelSpec
from orchestra.core.request import Message, as_sent
from orchestra.core.result import Usage
from orchestra.spend.estimate import TOKENS_PER_MESSAGE, count_tokens


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    """Where and how to reach a model for one call. The key is never printed."""

    api_base: str | None = None
    api_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True, kw_only=True)
class CallParams:
    """Per-call settings passed to the backend."""

    timeout_s: float
    max_tokens: int | None = None
    temperature: float | None = None


@dataclass(frozen=True, kw_only=True)
class Completion:
    """A whole answer from one model; `finish_reason` is the provider's, when it gave one."""

    text: str
    usage: Usage
    finish_reason: str | None = None


@dataclass(frozen=True, kw_only=True)
class StreamPiece:
    """One piece of a streamed answer; the last piece has `usage` (and the provider's
    `finish_reason`, when it gave one) set and may have no text."""

    text: str = ""
    usage: Usage | None = None
    finish_reason: str | None = None


def chat_messages(messages: Sequence[Message], system_prompt: str | None) -> list[dict[str, str]]:
    """The messages as sent to an OpenAI-compatible API, the model's own system prompt first
    unless the caller gave one."""
    return [{"role": m.role, "content": m.content} for m in as_sent(tuple(messages), system_prompt)]


class Backend(ABC):
    """Calls one model. Implementations raise `ProviderError` (and nothing else) on failure.

    `complete` is required; `stream` is optional and defaults to one piece holding the whole
    answer, so a simple backend (a test double, a function) gets streaming for free.
    """

    @abstractmethod
    async def complete(
        self, spec: ModelSpec, endpoint: Endpoint, messages: Sequence[Message], params: CallParams
    ) -> Completion: ...

    async def stream(
        self, spec: ModelSpec, endpoint: Endpoint, messages: Sequence[Message], params: CallParams
    ) -> AsyncIterator[StreamPiece]:
        completion = await self.complete(spec, endpoint, messages, params)
        yield StreamPiece(text=completion.text)
        yield StreamPiece(usage=completion.usage, finish_reason=completion.finish_reason)

    async def prepare(self, specs: Sequence[ModelSpec]) -> None:  # noqa: B027 - optional hook
        """Called with the catalog before the first call (and off the request path)."""

    async def ready(self, spec: ModelSpec) -> None:  # noqa: B027 - optional hook
        """Return once `spec` can be called at once; a backend that loads lazily (LiteLLM takes
        seconds to import) loads here. The executor awaits it before an attempt's clock starts:
        the backend's loading is not the model's latency, nor its fault."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Let go of connections and clients; a later call may open them again."""


def answer_usage(
    prompt: int,
    completion: int,
    messages: Sequence[Message],
    text: str,
    price: Callable[[int, int], float],
) -> Usage:
    """A provider's token counts for an answer, or (where it reports none) local counts that
    err high, priced by `price(prompt, completion)`. (The executor then checks them against the
    text: `orchestra.spend.settle`.)"""
    estimated = prompt <= 0 or (completion <= 0 and bool(text))
    if estimated:
        counted = sum(count_tokens(m.content) + TOKENS_PER_MESSAGE for m in messages)
        prompt, completion = max(prompt, counted), max(completion, count_tokens(text))
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_usd=price(prompt, completion),
        estimated=estimated,
    )


def empty_answer(spec: ModelSpec, billed: Usage | None = None) -> ProviderError:
    """An answer with no text (an empty or malformed body): the provider's failure, worth
    failing over; `billed` is the usage it reported for it all the same (charged). Without one,
    it answered all the same, and may have billed: `sent`."""
    return ProviderError(
        f"{spec.name}: the answer was empty (no text: an empty or malformed body)",
        kind="server",
        model=spec.name,
        billed=billed,
        sent=billed is None,
    )
