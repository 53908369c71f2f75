"""Token counts and costs estimated locally: before a call, and where a provider reports none.

No tokenizer is downloaded or loaded: a count is one regex pass, in the shape of the
pre-tokenizers of OpenAI-style BPE tokenizers, and it errs high on purpose (it sizes budget
reservations, and bills what a provider did not report):

- ASCII: each run of letters is one token per 4 letters (at least one), each group of up to 3
  digits one (a space before a number one more), each other non-space character one.
- CJK (ideographs, kana, hangul): 1.25 tokens a character; Cyrillic: one per 2 characters;
  accented Latin letters one each; emoji and other symbols 3 each; any other script (Greek,
  Arabic, Hebrew, Indic, Thai...) 1.25 a character.

Measured against tiktoken's cl100k_base and o200k_base (`python bench/tokens.py`): on real English
prompts (the routing data) it is 1.0-2.7x the true count, median 1.28; on Chinese, Japanese,
Korean, Russian, Arabic, Hindi, Greek, emoji, code, JSON and numbers 1.0-3.1x. It undercounts
random strings (an API key: 0.7x), which are rare in prompts and short.

`least_tokens` is the other bound: a count no tokenizer in use goes below (every
whitespace-separated word is at least one token in GPT's, Llama's, Mistral's, Qwen's and Gemma's),
used to catch a provider that reports less than it sent, and a stream that runs past its cap.
`most_prompt_tokens` bounds a prompt from above (every token of those tokenizers but the chat
template's own covers at least one byte of the text), to catch one that reports more.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from orchestra.core.model_spec import ModelSpec
from orchestra.core.request import Message, Request

TOKENS_PER_MESSAGE = 4  # the chat template's few tokens around each message

_ASCII_PIECE = re.compile(r"[A-Za-z]+|\d{1,3}| (?=\d)|[^\sA-Za-z\d]|\n")
# CJK ideographs, kana, hangul, and the full-width forms.
_WIDE = re.compile(
    "[\u1100-\u11ff\u2e80-\u9fff\ua960-\ua97f\uac00-\ud7ff\uf900-\ufaff\ufe30-\ufe4f"
    "\uff00-\uffef\U00020000-\U0003ffff]"
)
_CYRILLIC = re.compile("[\u0400-\u04ff]")
_LATIN = re.compile("[\u00c0-\u024f]")
_SYMBOL = re.compile("[\u2000-\u2bff\ufe0f\u200d\U0001f000-\U0001faff]")


def count_tokens(text: str) -> int:
    """A conservative local count of the tokens in `text` (see the module's docstring)."""
    if text.isascii():
        return _ascii_tokens(text)
    plain = text.encode("ascii", "ignore").decode("ascii")
    wide = len(_WIDE.findall(text))
    cyrillic = len(_CYRILLIC.findall(text))
    latin = len(_LATIN.findall(text))
    symbols = len(_SYMBOL.findall(text))
    other = len(text) - len(plain) - wide - cyrillic - latin - symbols
    return (
        _ascii_tokens(plain)
        + -(-wide * 5 // 4)
        + -(-cyrillic // 2)
        + latin
        + 3 * symbols
        + -(-other * 5 // 4)
    )


def least_tokens(text: str) -> int:
    """A count of `text`'s tokens that no common tokenizer goes below: one per word (a run
    between whitespace). Tokenizers split text at whitespace before merging, so no token spans
    two words. Weak on scripts written without spaces, never too high."""
    return len(text.split())


# The chat template's tokens around each message (5 in Llama 3's, Gemma's and ChatML's, a
# SentencePiece word marker one more), and around a whole prompt (the first token, the answer's
# header, a default system line some templates add such as Llama 3.1's dates): generous bounds.
TEMPLATE_TOKENS_PER_MESSAGE = 16
TEMPLATE_TOKENS_PER_PROMPT = 64


def most_prompt_tokens(messages: Iterable[Message]) -> int:
    """A count of a prompt's tokens that no common tokenizer goes above: a token (but the
    template's) covers at least one byte of the text."""
    return TEMPLATE_TOKENS_PER_PROMPT + sum(
        len(m.content.encode("utf-8", "surrogatepass")) + TEMPLATE_TOKENS_PER_MESSAGE
        for m in messages
    )


def _ascii_tokens(text: str) -> int:
    n = 0
    for piece in _ASCII_PIECE.findall(text):
        n += -(-len(piece) // 4) if piece[0].isalpha() else 1
    return n


def prompt_tokens(request: Request) -> int:
    """A local, conservative count of the request's prompt tokens."""
    return messages_tokens(request.messages)


@lru_cache(maxsize=4096)
def messages_tokens(messages: tuple[Message, ...]) -> int:
    """The tokens of a whole prompt, template included (cached: every agent and guard asks)."""
    return sum(count_tokens(m.content) + TOKENS_PER_MESSAGE for m in messages) + 1


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
