"""Where breakers keep their state: the storage interface and the in-memory implementation."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class BreakerRecord:
    """What storage persists for one model: enough to resume an open breaker after a restart."""

    state: str
    failures: int
    opened_at: float | None
    updated_at: float


@dataclass(frozen=True, kw_only=True)
class BreakerEvent:
    """One state transition, as kept by `MemoryBreakerStorage`."""

    model: str
    at: float
    from_state: str
    to_state: str
    reason: str


class BreakerStorage(ABC):
    """Persists breaker records and transition events.

    Called synchronously from the call path, so implementations must not block: read from memory,
    queue writes.
    """

    @abstractmethod
    def load(self, model: str) -> BreakerRecord | None:
        """The last saved record of `model`, or None if it has none."""

    @abstractmethod
    def save(self, model: str, record: BreakerRecord) -> None:
        """Replace the record of `model`."""

    @abstractmethod
    def event(self, model: str, at: float, from_state: str, to_state: str, reason: str) -> None:
        """Append one transition to the history."""


class MemoryBreakerStorage(BreakerStorage):
    """Records and events in dicts and lists: for tests, and runtimes without a store."""

    def __init__(self) -> None:
        self.records: dict[str, BreakerRecord] = {}
        self.events: list[BreakerEvent] = []

    def load(self, model: str) -> BreakerRecord | None:
        return self.records.get(model)

    def save(self, model: str, record: BreakerRecord) -> None:
        self.records[model] = record

    def event(self, model: str, at: float, from_state: str, to_state: str, reason: str) -> None:
        self.events.append(
            BreakerEvent(
                model=model, at=at, from_state=from_state, to_state=to_state, reason=reason
            )
        )
