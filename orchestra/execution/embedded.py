"""The embedded local model: SmolLM2-135M-Instruct served by llama.cpp (xllamacpp)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orchestra.core.errors import EmbeddedModelError
from orchestra.core.model_spec import ModelSpec
from orchestra.core.request import Message
from orchestra.core.tier import Tier
from orchestra.execution.backend import Endpoint, chat_messages
from orchestra.execution.embedded_child import EmbeddedChild
from orchestra.execution.embedded_server import (
    DEFAULT_SETTINGS,
    GGUF_FILE,
    GGUF_PACKAGE,
    INSTALL_HINT,
    ServerError,
    ServerSettings,
    find_gguf,
    read_prompt,
    start_server,
)

__all__ = [
    "GGUF_FILE",
    "GGUF_PACKAGE",
    "INSTALL_HINT",
    "EmbeddedConfig",
    "EmbeddedModel",
    "find_gguf",
]

log = logging.getLogger("orchestra.embedded")
_D = DEFAULT_SETTINGS


class EmbeddedConfig(BaseModel):
    """`[embedded]`: the built-in local model (SmolLM2-135M-Instruct through llama.cpp)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    name: str = _D["name"]
    n_ctx: int = Field(default=_D["n_ctx"], ge=256)
    threads: int | None = Field(default=_D["threads"], ge=1)
    max_tokens: int = Field(default=_D["max_tokens"], gt=0)
    # Measured on 8 factual questions: greedy decoding with no system prompt and llama.cpp's plain
    # chatml template answers 7/8 (Paris among them); "Answer briefly and accurately." as system
    # prompt 5/8, sampling at 0.8 about 1 in 3 for Paris. The jinja template adds SmolLM's own
    # default system prompt, which hurts too.
    temperature: float = Field(default=_D["temperature"], ge=0.0, le=2.0)
    seed: int = _D["seed"]
    system_prompt: str | None = None
    timeout_s: float = Field(default=120.0, gt=0)


class EmbeddedModel:
    """Starts llama.cpp's server on a free 127.0.0.1 port, lazily, once: in this process, or in
    `child` (already loading: a cold `orchestra run`, see `embedded_child`).

    The server is OpenAI-compatible; the executor calls it over plain HTTP (`EmbeddedBackend`).
    A random API key keeps other local processes out. `stop()` shuts it down (and ends `child`).
    """

    def __init__(self, config: EmbeddedConfig, *, child: EmbeddedChild | None = None) -> None:
        self.config = config
        self._child = child
        self._server: Any = None
        self._endpoint: Endpoint | None = None
        self._lock = asyncio.Lock()
        self._warming: asyncio.Task[Endpoint] | None = None
        self._starting: asyncio.Future[Endpoint] | None = None
        self._read_ahead: tuple[Message, ...] = ()

    def spec(self) -> ModelSpec:
        path = find_gguf()
        return ModelSpec(
            name=self.config.name,
            tier=Tier.LOCAL,
            litellm_model=f"openai/{self.config.name}",
            input_cost_per_mtok=0.0,
            output_cost_per_mtok=0.0,
            context_window=self.config.n_ctx,
            timeout_s=self.config.timeout_s,
            system_prompt=self.config.system_prompt,
            embedded=True,
            size_mb=round(path.stat().st_size / 1e6, 1) if path else None,
        )

    @property
    def running(self) -> bool:
        return self._endpoint is not None

    async def endpoint(self) -> Endpoint:
        """The server's endpoint, starting it on first use (in a thread: loading takes ~0.5 s).

        A caller that gives up waiting (its deadline passed, its client left) leaves the start
        going: the next caller takes it over rather than starting a second server.
        """
        if self._endpoint is None:
            async with self._lock:
                if self._endpoint is None:
                    starting = self._starting
                    if starting is None or (starting.done() and _failed(starting)):
                        starting = self._starting = asyncio.ensure_future(
                            asyncio.to_thread(self._start)
                        )
                    self._endpoint = await asyncio.shield(starting)
        return self._endpoint

    def warm_soon(self, read_ahead: Sequence[Message] = ()) -> None:
        """Start the server in the background, and have it read a prompt ahead.

        Reading ahead puts the prompt in llama.cpp's cache, in its own threads, while Orchestra
        does the rest of its work (imports, agents, policy, store): a call with the same
        messages then starts answering at once. The CLI knows its prompt before anything else;
        reading it ahead takes ~70 ms off a cold `orchestra run`, and costs nothing if another
        model answers. The first `endpoint()` waits for it: a call made meanwhile would read the
        prompt again, beside it. A failure to start surfaces at the first `endpoint()`.
        """
        if self._warming is None and self._endpoint is None:
            self._read_ahead = tuple(read_ahead)
            self._warming = asyncio.create_task(self.endpoint())
            self._warming.add_done_callback(_seen)

    async def stop(self) -> None:
        if self._warming is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(self._warming)  # the start (and read-ahead) ends first
            self._warming = None
        if self._starting is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(self._starting)  # a start no caller waits for any more
        async with self._lock:
            self._starting = None
            holder, self._server, self._endpoint = [self._server], None, None
            child, self._child = self._child, None
            if child is not None:
                await asyncio.to_thread(child.stop)
            if holder[0] is not None:
                # Dropping the last reference stops llama.cpp's threads and closes its port; that
                # takes ~50 ms, so it happens in a worker thread, not on the event loop.
                await asyncio.to_thread(holder.clear)

    def _start(self) -> Endpoint:
        settings = self.settings()
        ahead = self._read_ahead_body() if self._read_ahead else None
        child, self._child = self._child, None  # it serves once; a retry starts in-process
        try:
            if child is not None:
                try:
                    address, key = child.serve(settings, ahead)
                    self._child = child
                except ServerError as exc:  # the child only saves time: this process tries
                    child.stop()
                    log.warning("embedded model: its process failed (%s); starting it here", exc)
                    child = None
            if child is None:
                key = secrets.token_urlsafe(24)
                self._server = start_server(settings, key)
                address = self._server.listening_address
                if ahead is not None:
                    read_prompt(self._server, ahead)
        except ServerError as exc:
            raise EmbeddedModelError(str(exc)) from exc
        where = "a child process" if child is not None else "this process"
        log.info("embedded model %s serving on %s from %s", self.config.name, address, where)
        return Endpoint(api_base=f"{address}/v1", api_key=key)

    def settings(self) -> ServerSettings:
        """What llama.cpp's server starts with, from the config."""
        c = self.config
        return ServerSettings(
            name=c.name,
            n_ctx=c.n_ctx,
            threads=c.threads,
            max_tokens=c.max_tokens,
            temperature=c.temperature,
            seed=c.seed,
        )

    def _read_ahead_body(self) -> dict[str, Any]:
        """The chat request whose prompt to read ahead (see `warm_soon`)."""
        return {
            "model": self.config.name,
            "messages": chat_messages(self._read_ahead, self.config.system_prompt),
        }


def _failed(future: asyncio.Future[Any]) -> bool:
    return future.cancelled() or future.exception() is not None


def _seen(task: asyncio.Task[Any]) -> None:
    """Mark a background warm-up's failure as seen: the first call reports it."""
    if not task.cancelled():
        task.exception()
