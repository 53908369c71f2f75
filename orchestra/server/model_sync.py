"""Models changed while running: kept in the store, laid over the configured catalog.

The admin routes write a change to the store, then apply it here; every worker (and every
server sharing the store) reads the changes it has not seen yet every `models_sync_s`, in the
order they were made, so all converge on the same catalog. A restart applies them all again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from orchestra.core.errors import OrchestraError
from orchestra.runtime import Orchestra
from orchestra.store.base import StoredModel

log = logging.getLogger("orchestra.server")


class ModelSync:
    """Keeps one runtime's catalog equal to the configured one with the stored changes over it."""

    def __init__(self, orc: Orchestra, every_s: float) -> None:
        self.orc = orc
        self.every_s = every_s
        self.version = 0  # the last change applied
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Apply every stored change, then follow new ones in the background."""
        await self.catch_up()
        self._task = asyncio.create_task(self._follow(), name="orchestra-model-sync")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def catch_up(self) -> None:
        """Apply the stored changes not applied yet, oldest first."""
        async with self._lock:
            for change in await self.orc.store.stored_models(self.version):
                try:
                    await self._apply(change)
                except OrchestraError as exc:  # one bad change must not stop the others
                    log.warning("model %s: stored change not applied: %s", change.name, exc)
                self.version = change.version

    async def _apply(self, change: StoredModel) -> None:
        catalog = self.orc.catalog
        if change.spec is None:
            if change.name in catalog:
                await self.orc.remove_model(change.name)
        elif change.name not in catalog:
            await self.orc.add_model(change.spec)
        elif catalog.get(change.name) != change.spec:
            await self.orc.update_model(change.spec)

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            try:
                await self.catch_up()
            except Exception as exc:  # a busy store, say: the next round retries
                log.warning("model sync: %s: %s", type(exc).__name__, exc)
