"""What a request will cost on a model, estimated before the call (no tokenizer download)."""

from __future__ import annotations

from orchestra.core.model_spec import ModelSpec
from orchestra.core.request import Request

# ~4 characters a token for English text, plus the chat template's few tokens per message.
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4


def prompt_tokens(request: Request) -> int:
    """A local, conservative count of the request's prompt tokens."""
    chars = sum(len(m.content) for m in request.messages)
    return chars // CHARS_PER_TOKEN + 1 + TOKENS_PER_MESSAGE * len(request.messages)


def completion_tokens(request: Request, expected: int) -> int:
    """The answer's length: the request's cap when it sets one, else the expected length."""
    return request.max_tokens if request.max_tokens is not None else expected


def estimate_usd(spec: ModelSpec, request: Request, expected_completion: int) -> float | None:
    """The estimated cost on `spec`, or None when its price is unknown."""
    if spec.input_cost_per_mtok is None or spec.output_cost_per_mtok is None:
        return None
    return (
        prompt_tokens(request) * spec.input_cost_per_mtok
        + completion_tokens(request, expected_completion) * spec.output_cost_per_mtok
    ) / 1e6
