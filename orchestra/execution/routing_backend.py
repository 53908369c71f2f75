"""The runtime's default backend: the embedded model over plain HTTP, OpenAI-compatible servers
through the OpenAI SDK, every other model through LiteLLM; each library is imported only when a
model that needs it is actually tried (or preloaded).

LiteLLM takes seconds to import (and ~2 s more to tear down at exit); a cold `orchestra run`
answered by the embedded model should pay neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing

from orchestra.core.errors import ProviderError
from orchestra.core.model_spec import ModelSpec
from orchestra.core.request import Message
from orchestra.execution.backend import Backend, CallParams, Completion, Endpoint, StreamPiece
from orchestra.execution.embedded_backend import EmbeddedBackend
from orchestra.execution.openai_compatible import called_directly

log = logging.getLogger("orchestra.executor")


def litellm_backend() -> Backend:
    """The LiteLLM backend (importing LiteLLM: seconds, so call it off the event loop)."""
    from orchestra.execution.litellm_backend import LiteLLMBackend

    return LiteLLMBackend()


def openai_backend() -> Backend:
    """The OpenAI SDK's backend (importing the SDK: ~0.4 s, so call it off the event loop)."""
    from orchestra.execution.openai_backend import OpenAIBackend

    return OpenAIBackend()


class RoutingBackend(Backend):
    """Sends embedded models to `embedded`, OpenAI-compatible servers to the backend `direct()`
    builds (the OpenAI SDK: `openai_compatible.called_directly`), every other model to the one
    `remote()` builds (LiteLLM).

    Each builder runs once, in its own thread, when the first model of its kind is tried (or at
    `prepare` with `preload=True`, when the catalog has such a model); concurrent first calls
    share it. Until then it is never called, so a local answer never imports LiteLLM, nor does a
    catalog of OpenAI-compatible servers. `direct=None` sends those to `remote` too.
    """

    def __init__(
        self,
        *,
        embedded: Backend | None = None,
        remote: Callable[[], Backend] = litellm_backend,
        direct: Callable[[], Backend] | None = openai_backend,
        preload: bool = False,
    ) -> None:
        self.embedded = embedded if embedded is not None else EmbeddedBackend()
        self._litellm = _Lazy(remote, "LiteLLM")
        self._direct = _Lazy(direct, "the OpenAI SDK") if direct is not None else None
        self._preload = preload

    @property
    def remote(self) -> Backend | None:
        """The LiteLLM backend once loaded (None before: LiteLLM not imported by us)."""
        return self._litellm.backend

    @property
    def direct(self) -> Backend | None:
        """The OpenAI SDK's backend once loaded (None before)."""
        return self._direct.backend if self._direct is not None else None

    async def prepare(self, specs: Sequence[ModelSpec]) -> None:
        await self.embedded.prepare([s for s in specs if s.embedded])
        # Every remote model is prepared by both (a model's route can change: LiteLLM
        # callbacks configured later send OpenAI-compatible servers through LiteLLM too).
        for lazy in self._lazies():
            await lazy.prepare([s for s in specs if not s.embedded])
        if self._preload:
            for spec in specs:
                if not spec.embedded:
                    self._lazy_for(spec).load()

    async def ready(self, spec: ModelSpec) -> None:
        if not spec.embedded:
            await self._backend_for(spec)

    async def complete(
        self, spec: ModelSpec, endpoint: Endpoint, messages: Sequence[Message], params: CallParams
    ) -> Completion:
        backend = await self._backend_for(spec)
        return await backend.complete(spec, endpoint, messages, params)

    async def stream(
        self, spec: ModelSpec, endpoint: Endpoint, messages: Sequence[Message], params: CallParams
    ) -> AsyncIterator[StreamPiece]:
        backend = await self._backend_for(spec)
        # aclosing: a reader that stops early closes the inner stream (and its connection) now.
        async with aclosing(backend.stream(spec, endpoint, messages, params)) as pieces:  # type: ignore[type-var]
            async for piece in pieces:
                yield piece

    async def close(self) -> None:
        await self.embedded.close()
        for lazy in self._lazies():
            if lazy.backend is not None:
                await lazy.backend.close()

    def _lazies(self) -> list[_Lazy]:
        return [self._litellm] + ([self._direct] if self._direct is not None else [])

    def _lazy_for(self, spec: ModelSpec) -> _Lazy:
        if self._direct is not None and called_directly(spec):
            return self._direct
        return self._litellm

    async def _backend_for(self, spec: ModelSpec) -> Backend:
        if spec.embedded:
            return self.embedded
        lazy = self._lazy_for(spec)
        if lazy.backend is not None:
            return lazy.backend
        try:
            # Shielded: a first caller that gives up must not cancel the others' load.
            return await asyncio.shield(lazy.load())
        except Exception as exc:
            raise ProviderError(
                f"{spec.name}: its backend could not be loaded: {type(exc).__name__}: {exc}",
                kind="unavailable",
                model=spec.name,
            ) from exc


class _Lazy:
    """A backend built on first use, in a thread of its own, and prepared with the catalog."""

    def __init__(self, make: Callable[[], Backend], name: str) -> None:
        self._make, self._name = make, name
        self._specs: list[ModelSpec] = []
        self.backend: Backend | None = None
        self._loading: asyncio.Future[Backend] | None = None

    async def prepare(self, specs: Sequence[ModelSpec]) -> None:
        # Called again for each model added while running: the specs accumulate by name.
        known = {s.name: s for s in self._specs} | {s.name: s for s in specs}
        self._specs = list(known.values())
        if self.backend is not None:
            await self.backend.prepare(specs)

    def load(self) -> asyncio.Future[Backend]:
        failed = self._loading is not None and self._loading.done() and not self.backend
        if self._loading is None or failed:  # a failed load is tried again (LiteLLM installed)
            self._loading = asyncio.ensure_future(self._load())
            self._loading.add_done_callback(self._loaded)
        return self._loading

    async def _load(self) -> Backend:
        backend = await _in_thread(self._make)
        await backend.prepare(self._specs)
        self.backend = backend
        return backend

    def _loaded(self, loading: asyncio.Future[Backend]) -> None:
        if not loading.cancelled() and (exc := loading.exception()) is not None:
            log.warning("the backend of %s could not be loaded: %s", self._name, exc)


async def _in_thread(make: Callable[[], Backend]) -> Backend:
    """`make()` in a daemon thread of its own, the event loop running on meanwhile.

    Not `asyncio.to_thread`: the default executor's threads are joined when `asyncio.run` ends,
    so a process done before the import would wait seconds for an import it no longer needs.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Backend] = loop.create_future()

    def settle(result: Backend | None, exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            assert result is not None
            future.set_result(result)

    def run() -> None:
        result: Backend | None = None
        error: BaseException | None = None
        try:
            result = make()
        except BaseException as exc:  # handed to the awaiting task, which classifies it
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="orchestra-backend-load", daemon=True).start()
    return await future
