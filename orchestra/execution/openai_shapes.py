"""Reading the OpenAI chat API's answers as the SDK (or LiteLLM, in the SDK's shapes) gives
them: the text, the usage the provider reported and why it stopped, of a whole answer or of one
streamed chunk. Both backends that speak that API read them here, so they read them alike."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from typing import Any

from orchestra.core.model_spec import ModelSpec
from orchestra.core.request import Message
from orchestra.core.result import Usage
from orchestra.execution.backend import Completion, StreamPiece, answer_usage, empty_answer
from orchestra.execution.provider_errors import provider_error

Price = Callable[[int, int], float]


def completion(
    spec: ModelSpec, response: Any, messages: Sequence[Message], price: Price
) -> Completion:
    """A whole answer as a `Completion`; one with no text is the provider's failure."""
    text, usage, finish = answer_parts(response)
    if not text:
        raise empty_answer(spec, billed(usage, messages, price))
    return Completion(text=text, usage=usage_of(usage, messages, text, price), finish_reason=finish)


async def stream_pieces(
    spec: ModelSpec, chunks: AsyncIterable[Any], messages: Sequence[Message], price: Price
) -> AsyncIterator[StreamPiece]:
    """The text of each chunk as it comes, then a last piece with the usage; a failure while
    reading is a `ProviderError` (`stream_broken` once text has come), no text at all the
    provider's failure."""
    parts: list[str] = []
    usage = finish = None
    try:
        async for chunk in chunks:
            text, reported, reason = chunk_parts(chunk)
            usage, finish = reported or usage, reason or finish
            if text:
                parts.append(text)
                yield StreamPiece(text=text)
    except Exception as exc:
        raise provider_error(exc, spec, started=bool(parts)) from exc
    if not parts:
        raise empty_answer(spec, billed(usage, messages, price))
    yield StreamPiece(usage=usage_of(usage, messages, "".join(parts), price), finish_reason=finish)


def answer_parts(response: Any) -> tuple[str, Any, str | None]:
    """(text, reported usage or None, finish reason or None) of a whole answer."""
    choices = getattr(response, "choices", None)
    first = choices[0] if choices else None
    text = getattr(getattr(first, "message", None), "content", None)
    return _text(text), getattr(response, "usage", None), _finish(first)


def chunk_parts(chunk: Any) -> tuple[str, Any, str | None]:
    """(text, reported usage or None, finish reason or None) of one streamed chunk."""
    choices = getattr(chunk, "choices", None)
    first = choices[0] if choices else None
    text = getattr(getattr(first, "delta", None), "content", None)
    return _text(text), getattr(chunk, "usage", None) or None, _finish(first)


def usage_of(usage: Any, messages: Sequence[Message], text: str, price: Price) -> Usage:
    """The answer's usage: the provider's counts, or (where it reported none) local counts."""
    return answer_usage(
        _tokens(usage, "prompt_tokens"), _tokens(usage, "completion_tokens"), messages, text, price
    )


def billed(usage: Any, messages: Sequence[Message], price: Price) -> Usage | None:
    """What a call that gave no text was billed, when the provider reported any usage."""
    if not (_tokens(usage, "prompt_tokens") or _tokens(usage, "completion_tokens")):
        return None
    return usage_of(usage, messages, "", price)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _finish(choice: Any) -> str | None:
    reason = getattr(choice, "finish_reason", None)
    return reason if isinstance(reason, str) else None


def _tokens(usage: Any, name: str) -> int:
    value = getattr(usage, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
