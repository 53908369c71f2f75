"""A backend made of one function: test an app (or a policy, an agent) with no HTTP at all.

    def answer(call: Call) -> str:
        return "Paris" if "France" in call.prompt else "I don't know"

    async with Orchestra(config, backend=FunctionBackend(answer)) as orc:
        ...

As httpx's `MockTransport` is a transport from one handler, this is a backend from one function.
Keep `orchestra.testing.StubProvider` for what only a network shows (timeouts, dropped streams).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from orchestra.core.model_spec import ModelSpec
from orchestra.core.request import Message
from orchestra.core.result import Usage
from orchestra.execution.backend import Backend, CallParams, Completion, Endpoint, StreamPiece
from orchestra.spend.estimate import cost_usd, count_tokens

Reply = str | Completion | Iterable[str]
Handler = Callable[["Call"], Reply | Awaitable[Reply]]


@dataclass(frozen=True, kw_only=True)
class Call:
    """One call the backend received: which model, what messages, with what parameters."""

    spec: ModelSpec
    messages: tuple[Message, ...]
    params: CallParams
    stream: bool = False

    @property
    def model(self) -> str:
        return self.spec.name

    @property
    def prompt(self) -> str:
        """The last user message."""
        return next((m.content for m in reversed(self.messages) if m.role == "user"), "")


@dataclass
class FunctionBackend(Backend):
    """Answers every call with `handler(call)`, sync or async.

    The handler returns the answer's text (usage is counted from the text and priced with the
    model's catalog prices), a full `Completion`, or an iterable of text pieces (streamed one by
    one); it raises `ProviderError` to play a failing provider. Every call is kept in `calls`.
    """

    handler: Handler
    calls: list[Call] = field(default_factory=list)

    async def complete(
        self, spec: ModelSpec, endpoint: Endpoint, messages: Sequence[Message], params: CallParams
    ) -> Completion:
        call = Call(spec=spec, messages=tuple(messages), params=params)
        reply = await self._reply(call)
        if isinstance(reply, Completion):
            return reply
        text = reply if isinstance(reply, str) else "".join(reply)
        return Completion(text=text, usage=_usage(spec, messages, text))

    async def stream(
        self, spec: ModelSpec, endpoint: Endpoint, messages: Sequence[Message], params: CallParams
    ) -> AsyncIterator[StreamPiece]:
        call = Call(spec=spec, messages=tuple(messages), params=params, stream=True)
        reply = await self._reply(call)
        if isinstance(reply, Completion):
            pieces: Iterable[str] = [reply.text]
            usage: Usage | None = reply.usage
        else:
            pieces = [reply] if isinstance(reply, str) else reply
            usage = None
        text: list[str] = []
        for piece in pieces:
            text.append(piece)
            yield StreamPiece(text=piece)
        yield StreamPiece(usage=usage or _usage(spec, messages, "".join(text)))

    async def _reply(self, call: Call) -> Reply:
        self.calls.append(call)
        reply = self.handler(call)
        if inspect.isawaitable(reply):
            reply = await reply
        return reply


def _usage(spec: ModelSpec, messages: Sequence[Message], text: str) -> Usage:
    prompt = sum(count_tokens(m.content) for m in messages)
    completion = count_tokens(text)
    cost = cost_usd(spec, prompt, completion) or 0.0
    return Usage(prompt_tokens=prompt, completion_tokens=completion, cost_usd=cost)
