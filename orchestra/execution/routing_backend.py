"""The runtime's default backend: the embedded model over plain HTTP, every other model through
LiteLLM, which is imported only when such a model is actually tried (or preloaded).

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

log = logging.getLogger("orchestra.executor")


def litellm_backend() -> Backend:
    """The LiteLLM backend (importing LiteLLM: seconds, so call it off the event loop)."""
    from orchestra.execution.litellm_backend import LiteLLMBackend

    return LiteLLMBackend()


class RoutingBackend(Backend):
    """Sends embedded models to `embedded`, every other model to the backend `remote()` builds.

    `remote()` runs once, in its own thread, when the first non-embedded model is tried (or at
    `prepare` with `preload=True`, when the catalog has such a model); concurrent first calls
    share it. Until then it is never called, so a local answer never imports LiteLLM.
    """

    def __init__(
        self,
        *,
        embedded: Backend | None = None,
        remote: Callable[[], Backend] = litellm_backend,
        preload: bool = False,
    ) -> None:
        self.embedded = embedded if embedded is not None else EmbeddedBackend()
        self._make_remote = remote
        self._preload = preload
        self._remote_specs: list[ModelSpec] = []
        self._remote: Backend | None = None
        self._loading: asyncio.Future[Backend] | None = None

    @property
    def remote(self) -> Backend | None:
        """The remote backend once loaded (None before: LiteLLM not imported by us)."""
        return self._remote

    async def prepare(self, specs: Sequence[ModelSpec]) -> None:
        await self.embedded.prepare([s for s in specs if s.embedded])
        remote = [s for s in specs if not s.embedded]
        # Called again for each model added while running: the specs accumulate by name.
        known = {s.name: s for s in self._remote_specs} | {s.name: s for s in remote}
        self._remote_specs = list(known.values())
        if self._remote is not None:
            await self._remote.prepare(remote)
        elif self._preload and remote:
            self.load_remote()

    def load_remote(self) -> asyncio.Future[Backend]:
        """Start loading the remote backend, once; the future resolves when it can be called."""
        failed = self._loading is not None and self._loading.done() and not self._remote
        if self._loading is None or failed:  # a failed load is tried again (LiteLLM installed)
            self._loading = asyncio.ensure_future(self._load())
            self._loading.add_done_callback(self._loaded)
        return self._loading

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

    async def _backend_for(self, spec: ModelSpec) -> Backend:
        if spec.embedded:
            return self.embedded
        if self._remote is not None:
            return self._remote
        loading = self.load_remote()
        try:
            # Shielded: a first caller that gives up must not cancel the others' load.
            return await asyncio.shield(loading)
        except Exception as exc:
            raise ProviderError(
                f"{spec.name}: its backend could not be loaded: {type(exc).__name__}: {exc}",
                kind="unavailable",
                model=spec.name,
            ) from exc

    async def _load(self) -> Backend:
        backend = await _in_thread(self._make_remote)
        await backend.prepare(self._remote_specs)
        self._remote = backend
        return backend

    def _loaded(self, loading: asyncio.Future[Backend]) -> None:
        if not loading.cancelled() and (exc := loading.exception()) is not None:
            log.warning("the remote backend (LiteLLM) could not be loaded: %s", exc)


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
