"""Breaker storage in the SQLite store: read once at start, written through the store's funnel."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from orchestra.breaker.storage import BreakerRecord, BreakerStorage

if TYPE_CHECKING:
    from orchestra.store import Store

log = logging.getLogger("orchestra.breaker")

_SELECT = "SELECT model, state, failures, opened_at, updated_at FROM breaker_state"
_UPSERT = (
    "INSERT INTO breaker_state (model, state, failures, opened_at, updated_at)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT(model) DO UPDATE SET state = excluded.state,"
    " failures = excluded.failures, opened_at = excluded.opened_at,"
    " updated_at = excluded.updated_at"
)
_INSERT_EVENT = (
    "INSERT INTO breaker_events (model, at, from_state, to_state, reason) VALUES (?, ?, ?, ?, ?)"
)


class SqliteBreakerStorage(BreakerStorage):
    """`breaker_state` and `breaker_events` (schema migration 3) over an open `Store`.

    `preload()` reads every row once, so `load()` is a dict lookup on the call path; `save()` and
    `event()` only queue statements with `Store.write_later`, committed by the store's writer.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._records: dict[str, BreakerRecord] = {}
        self._preloaded = False
        self._warned = False

    async def preload(self) -> None:
        rows = await self._store.fetch(_SELECT)
        loaded = {
            model: BreakerRecord(
                state=state, failures=int(failures), opened_at=opened_at, updated_at=updated_at
            )
            for model, state, failures, opened_at, updated_at in rows
        }
        # Anything saved before preload is newer than the disk.
        self._records = {**loaded, **self._records}
        self._preloaded = True

    def load(self, model: str) -> BreakerRecord | None:
        if not self._preloaded and not self._warned:
            self._warned = True
            log.warning("breaker storage used before preload(): persisted breakers are ignored")
        return self._records.get(model)

    def save(self, model: str, record: BreakerRecord) -> None:
        self._records[model] = record
        self._store.write_later(
            _UPSERT, (model, record.state, record.failures, record.opened_at, record.updated_at)
        )

    def event(self, model: str, at: float, from_state: str, to_state: str, reason: str) -> None:
        self._store.write_later(_INSERT_EVENT, (model, at, from_state, to_state, reason))
