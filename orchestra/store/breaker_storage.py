"""Breaker storage in the store: read once at start, written through the store's funnel."""

from __future__ import annotations

import logging

from orchestra.core.errors import StoreError
from orchestra.execution.breaker.storage import BreakerRecord, BreakerStorage
from orchestra.store.base import Store

log = logging.getLogger("orchestra.breaker")


class StoreBreakerStorage(BreakerStorage):
    """Breakers kept in a `Store` (`breaker_state` and `breaker_events`).

    `preload()` reads every record once, so `load()` is a dict lookup on the call path; `save()`
    and `event()` only queue writes, committed by the store's writer; `refresh()` picks up what
    other processes sharing the store saved (the runtime calls it every second).
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._records: dict[str, BreakerRecord] = {}
        self._preloaded = False
        self._warned = False

    async def preload(self) -> None:
        try:
            loaded = await self._store.breaker_records()
        except StoreError as exc:  # a shared store unreachable at start: breakers start closed
            log.warning("breakers: cannot read the stored states (%s); starting without them", exc)
            loaded = {}
        # Anything saved before preload is newer than the disk.
        self._records = {**loaded, **self._records}
        self._preloaded = True

    async def refresh(self) -> dict[str, BreakerRecord]:
        """Read the store again; the records other processes saved since, by model."""
        newer: dict[str, BreakerRecord] = {}
        for model, record in (await self._store.breaker_records()).items():
            mine = self._records.get(model)
            if mine is None or record.updated_at > mine.updated_at:
                self._records[model] = newer[model] = record
        return newer

    def load(self, model: str) -> BreakerRecord | None:
        if not self._preloaded and not self._warned:
            self._warned = True
            log.warning("breaker storage used before preload(): persisted breakers are ignored")
        return self._records.get(model)

    def save(self, model: str, record: BreakerRecord) -> None:
        self._records[model] = record
        self._store.save_breaker(model, record)

    def event(self, model: str, at: float, from_state: str, to_state: str, reason: str) -> None:
        self._store.add_breaker_event(model, at, from_state, to_state, reason)
