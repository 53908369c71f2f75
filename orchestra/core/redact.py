"""Keeps secrets out of error messages, logs and the store."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Sequence

from orchestra.core.request import Message

# Shapes of common API keys, masked even when we do not know the value.
_KEY_SHAPES = re.compile(
    r"(sk-[A-Za-z0-9_\-]{8,}|AIza[0-9A-Za-z_\-]{20,}|gsk_[A-Za-z0-9]{20,}|Bearer\s+[A-Za-z0-9._\-]{8,})"
)
MASK = "***"


class Redactor:
    """Replaces known secret values, and anything shaped like an API key, with `***`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    @classmethod
    def from_env(cls, names: Iterable[str]) -> Redactor:
        return cls(os.environ.get(n, "") for n in names)

    def add(self, secret: str) -> None:
        if secret and len(secret) >= 4 and secret not in self._secrets:
            self._secrets = sorted([*self._secrets, secret], key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return _KEY_SHAPES.sub(MASK, text)


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in every record it passes: key shapes, and the values
    of the environment variables `names` (by default every `*_API_KEY` and `*_TOKEN`)."""

    def __init__(self, names: Iterable[str] | None = None) -> None:
        super().__init__()
        if names is None:
            names = [n for n in os.environ if n.endswith(("_API_KEY", "_TOKEN", "_SECRET"))]
        self._redact = Redactor.from_env(names)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self._redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


PROMPT_MASK = "[prompt]"
_MIN_ECHO = 12  # shorter message texts are too common to strip out of a provider's words


def strip_prompt(text: str, messages: Sequence[Message]) -> str:
    """`text` (a provider's error body, say) without the request's messages in it, plain or as
    escaped in JSON: what a provider echoes of a prompt must not be kept when prompts are not."""
    for m in sorted(messages, key=lambda m: len(m.content), reverse=True):
        if len(m.content) < _MIN_ECHO:
            continue
        text = text.replace(m.content, PROMPT_MASK)
        escaped = json.dumps(m.content)[1:-1]
        if escaped != m.content:
            text = text.replace(escaped, PROMPT_MASK)
        ascii_escaped = json.dumps(m.content, ensure_ascii=False)[1:-1]
        if ascii_escaped not in (m.content, escaped):
            text = text.replace(ascii_escaped, PROMPT_MASK)
    return text
