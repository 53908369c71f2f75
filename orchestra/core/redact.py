"""Keeps secrets out of error messages, logs and the store."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence

from orchestra.core.credentials import find_credentials
from orchestra.core.request import Message

MASK = "***"


def mask_credentials(text: str) -> str:
    """`text` with every credential shape (`orchestra.core.credentials`) replaced by `***`: API
    keys and tokens, private key blocks, and the values of password assignments (their names
    stay). Linear in the text."""
    spans = sorted((f.start, f.end) for f in find_credentials(text, mask=True))
    if not spans:
        return text
    merged = [list(spans[0])]
    for start, end in spans[1:]:
        if start <= merged[-1][1]:  # overlapping or touching: one mask
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    parts: list[str] = []
    pos = 0
    for start, end in merged:
        parts += (text[pos:start], MASK)
        pos = end
    parts.append(text[pos:])
    return "".join(parts)


class Redactor:
    """Replaces known secret values, and every credential shape the privacy agent detects (see
    `orchestra.core.credentials`), with `***`."""

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
        return mask_credentials(text)


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
