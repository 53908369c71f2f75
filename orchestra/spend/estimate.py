"""Token counts and costs estimated locally, before a call (or where a provider reports none).

No tokenizer is downloaded or loaded: a count is a few string scans. It errs high on purpose,
since it sizes budget reservations: about 4 characters a token for ASCII text (English prose runs
4.0-4.5 with OpenAI's tokenizers, code and digits nearer 3), one token per CJK character (Chinese,
Japanese and Korean run 0.7-1.2), and one per 2 characters of other scripts (Cyrillic, Greek,
Arabic, Hebrew, Indic, Thai: 2-4 characters a token). `bench/tokens.py` measures it against
tiktoken's encodings.
"""

from __future__ import annotations

import re

from orchestra.core.model_spec import ModelSpec
from orchestra.core.request import Request

ASCII_CHARS_PER_TOKEN = 4
OTHER_CHARS_PER_TOKEN = 2
TOKENS_PER_MESSAGE = 4  # the chat template's few tokens around each message

# CJK ideographs, kana, hangul, and the full-width forms: about a token each.
_WIDE = re.compile(
    "[\u1100-\u11ff\u2e80-\u9fff\ua960-\ua97f\uac00-\ud7ff\uf900-\ufaff\ufe30-\ufe4f"
    "\uff00-\uffef\U00020000-\U0003ffff]"
)


def count_tokens(text: str) -> int:
    """A conservative local count of the tokens in `text` (see the module's docstring)."""
    if text.isascii():
        return -(-len(text) // ASCII_CHARS_PER_TOKEN)
    ascii_chars = len(text.encode("ascii", "ignore"))
    wide = len(_WIDE.findall(text))
    other = len(text) - ascii_chars - wide
    return -(-ascii_chars // ASCII_CHARS_PER_TOKEN) + wide + -(-other // OTHER_CHARS_PER_TOKEN)


def prompt_tokens(request: Request) -> int:
    """A local, conservative count of the request's prompt tokens."""
    return sum(count_tokens(m.content) + TOKENS_PER_MESSAGE for m in request.messages) + 1


def completion_tokens(request: Request, expected: int) -> int:
    """The answer's length: the request's cap when it sets one, else the expected length."""
    return request.max_tokens if request.max_tokens is not None else expected


def cost_usd(spec: ModelSpec, prompt: int, completion: int) -> float | None:
    """What `prompt` + `completion` tokens cost on `spec`, or None when its price is unknown."""
    if spec.input_cost_per_mtok is None or spec.output_cost_per_mtok is None:
        return None
    return (prompt * spec.input_cost_per_mtok + completion * spec.output_cost_per_mtok) / 1e6


def estimate_usd(spec: ModelSpec, request: Request, expected_completion: int) -> float | None:
    """The estimated cost on `spec`, or None when its price is unknown."""
    return cost_usd(spec, prompt_tokens(request), completion_tokens(request, expected_completion))
