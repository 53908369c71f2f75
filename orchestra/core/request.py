"""A request: the messages to answer plus the caller's hints."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestra.core.tier import Tier


class Message(BaseModel):
    """One chat message."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["system", "user", "assistant", "tool"]
    content: str


def as_sent(messages: tuple[Message, ...], system_prompt: str | None) -> tuple[Message, ...]:
    """The messages a model is sent: its own system prompt first unless the caller gave one
    (it is paid for like the rest of the prompt)."""
    if not system_prompt or any(m.role == "system" for m in messages):
        return messages
    return (Message(role="system", content=system_prompt), *messages)


def new_request_id() -> str:
    return uuid.uuid4().hex


class Request(BaseModel):
    """What to answer (`messages`) and the caller's hints (`model`, `tier`, limits).

    `model` forces a catalog model and `tier` a tier; agents still give their verdicts and a hard
    constraint still wins over a hint.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(default_factory=new_request_id)
    messages: tuple[Message, ...]
    model: str | None = None
    tier: Tier | None = None
    max_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    timeout_s: float | None = Field(default=None, gt=0.0)
    priority: int = 0  # higher goes first when a rate-limited model makes requests queue
    # Needs the policy should honour: an answer within this many ms, capabilities the model must
    # have (e.g. "vision", "tools", "json"), and a context window of at least this many tokens.
    latency_ms: float | None = Field(default=None, gt=0.0)
    capabilities: frozenset[str] = frozenset()
    min_context: int | None = Field(default=None, gt=0)

    @field_validator("messages")
    @classmethod
    def _needs_a_message(cls, messages: tuple[Message, ...]) -> tuple[Message, ...]:
        if not messages:
            raise ValueError("a request needs at least one message")
        if not any(m.role == "user" and m.content.strip() for m in messages):
            raise ValueError("a request needs a non-empty user message")
        for i, m in enumerate(messages):
            try:
                m.content.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(
                    f"message {i} is not valid text: a lone surrogate ({exc.object[exc.start]!r}"
                    f") at character {exc.start}"
                ) from None
        return messages

    @property
    def prompt(self) -> str:
        """The last user message: what per-request agents judge."""
        for message in reversed(self.messages):
            if message.role == "user":
                return message.content
        return ""

    @classmethod
    def of(
        cls, prompt: str | list[dict[str, str]] | tuple[Message, ...], **hints: object
    ) -> Request:
        """Build a request from a prompt string or a list of {role, content} messages."""
        if isinstance(prompt, str):
            messages: object = ({"role": "user", "content": prompt},)
        else:
            messages = tuple(prompt)
        return cls.model_validate({"messages": messages, **hints})
