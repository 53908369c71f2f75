"""A circuit breaker per model deployment, and the board that holds one per model."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from orchestra.core.errors import ProviderErrorKind
from orchestra.execution.breaker.listener import BreakerListener
from orchestra.execution.breaker.states import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerState,
    ClosedState,
    HalfOpenState,
    OpenState,
)
from orchestra.execution.breaker.storage import BreakerRecord, BreakerStorage, MemoryBreakerStorage

log = logging.getLogger("orchestra.breaker")

Clock = Callable[[], float]


class BreakerSettings(BaseModel):
    """`[breaker]`: when a model's breaker trips and how long it stays open, and which kinds of
    failure count against it (`trip_on`): those that say something about the provider's
    health, not about the request, the budget or a limit of ours. A provider's 429 counts by
    default: a quota run out answers 429 on every call, and without the breaker every request
    would wait out its retries first."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    failure_threshold: int = Field(default=3, ge=1)
    recovery_s: float = Field(default=60.0, gt=0.0)
    window: int = Field(default=20, ge=1)
    min_calls: int = Field(default=10, ge=1)
    failure_rate: float = Field(default=0.5, gt=0.0, le=1.0)
    trip_on: frozenset[ProviderErrorKind] = frozenset(
        {"timeout", "connection", "server", "rate_limit", "stream_broken", "auth", "unknown"}
    )


DEFAULT_SETTINGS = BreakerSettings()


class CircuitBreaker:
    """One model's breaker: `allow()` before a call, then `record_success()` or `record_failure()`.

    Every transition is saved to storage, appended as an event and told to the listeners. The
    clock is the wall clock on purpose: a persisted `opened_at` must mean the same after a restart.
    """

    def __init__(
        self,
        model: str,
        *,
        settings: BreakerSettings = DEFAULT_SETTINGS,
        storage: BreakerStorage | None = None,
        clock: Clock = time.time,
        listeners: Sequence[BreakerListener] = (),
    ) -> None:
        self.model = model
        self.settings = settings
        self._storage = storage if storage is not None else MemoryBreakerStorage()
        self._clock = clock
        self._listeners = tuple(listeners)
        # Re-entrant: a listener may read the breaker it is told about.
        self._lock = threading.RLock()
        record = self._storage.load(model)
        self._state: BreakerState = self._seed(record)
        self._saved = self._snapshot()
        self._updated_at = record.updated_at if record is not None else 0.0

    @property
    def state(self) -> str:
        return self._state.name

    def allow(self) -> bool:
        """May a call go to this model now? In half-open, True hands out the one trial call."""
        with self._lock:
            return self._state.before_call(self, self._clock())

    def why_not(self) -> str:
        """Why `allow()` is False, e.g. "breaker open (42 s left)"; "" when calls may go."""
        with self._lock:
            return self._state.why_not(self, self._clock())

    def retry_in(self) -> float | None:
        """Seconds until `allow()` may say True again (an open breaker's recovery left); 0 when
        it may now; None when unknown (a trial call in flight decides)."""
        with self._lock:
            return self._state.wait_s(self, self._clock())

    def record_success(self) -> None:
        with self._lock:
            now = self._clock()
            self._state.on_success(self, now)
            self._save_if_changed(now)
            self._notify("success", self.model)

    def record_failure(self, reason: str = "") -> None:
        with self._lock:
            now = self._clock()
            self._state.on_failure(self, now, reason)
            self._save_if_changed(now)
            self._notify("failure", self.model, reason)

    def release(self) -> None:
        """The call `allow()` let through was not made, or ended saying nothing of the model's
        health (refused by the budget, a bad request, its caller gone): in half-open the trial
        is given back at once rather than presumed lost for a whole recovery period."""
        with self._lock:
            self._state.on_release(self, self._clock())

    def adopt(self, record: BreakerRecord) -> None:
        """Take the state another process (or host) saved, when it is newer than this one's:
        a provider one process found dead is skipped by all."""
        with self._lock:
            if record.updated_at <= self._updated_at:
                return
            old = self._state.name
            self._state = self._seed(record)
            self._saved = self._snapshot()
            self._updated_at = record.updated_at
            if self._state.name != old:
                reason = "seen in the store (another process)"
                self._notify("state_changed", self.model, old, self._state.name, reason)

    # -- the states' funnel ----------------------------------------------------------------------

    def _move(self, new: BreakerState, reason: str, now: float) -> None:
        """Enter `new`: persist, record the event, tell the listeners."""
        old = self._state.name
        self._state = new
        self._save(now)
        self._guard("event", self._storage.event, self.model, now, old, new.name, reason)
        self._notify("state_changed", self.model, old, new.name, reason)

    # -- persistence and listeners ----------------------------------------------------------------

    def _seed(self, record: BreakerRecord | None) -> BreakerState:
        if record is None or record.state == CLOSED:
            failures = record.failures if record else 0
            return ClosedState(self.settings.window, failures)
        if record.state == OPEN:
            opened_at = record.opened_at if record.opened_at is not None else self._clock()
            return OpenState(opened_at, record.failures)
        if record.state == HALF_OPEN:  # the trial died with the old process: allow a new one
            return HalfOpenState(record.opened_at, record.failures)
        log.warning(
            "breaker %s: unknown stored state %r; starting closed", self.model, record.state
        )
        return ClosedState(self.settings.window)

    def _snapshot(self) -> tuple[str, int, float | None]:
        return self._state.name, self._state.failures, self._state.opened_at

    def _save_if_changed(self, now: float) -> None:
        # Counter changes inside a state are saved too, but a run of successes costs no writes.
        if self._snapshot() != self._saved:
            self._save(now)

    def _save(self, now: float) -> None:
        self._saved = name, failures, opened_at = self._snapshot()
        self._updated_at = now
        record = BreakerRecord(state=name, failures=failures, opened_at=opened_at, updated_at=now)
        self._guard("save", self._storage.save, self.model, record)

    def _notify(self, method: str, *args: str) -> None:
        for listener in self._listeners:
            self._guard(f"listener {method}", getattr(listener, method), *args)

    def _guard(self, what: str, fn: Callable[..., object], *args: object) -> None:
        # Bookkeeping must never fail the model call it is about.
        try:
            fn(*args)
        except Exception:
            log.exception("breaker %s: %s failed", self.model, what)


class BreakerBoard:
    """All breakers of one runtime, created on first use and seeded from storage."""

    def __init__(
        self,
        settings: BreakerSettings = DEFAULT_SETTINGS,
        storage: BreakerStorage | None = None,
        clock: Clock = time.time,
        listeners: Sequence[BreakerListener] = (),
    ) -> None:
        self.settings = settings
        self.storage = storage if storage is not None else MemoryBreakerStorage()
        self._clock = clock
        self._listeners = tuple(listeners)
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    def get(self, model: str) -> CircuitBreaker:
        with self._lock:
            breaker = self._breakers.get(model)
            if breaker is None:
                breaker = self._breakers[model] = CircuitBreaker(
                    model,
                    settings=self.settings,
                    storage=self.storage,
                    clock=self._clock,
                    listeners=self._listeners,
                )
            return breaker

    def adopt(self, records: Mapping[str, BreakerRecord]) -> None:
        """Bring the breakers in use up to date with states other processes saved."""
        with self._lock:
            known = [(self._breakers[m], r) for m, r in records.items() if m in self._breakers]
        for breaker, record in known:
            breaker.adopt(record)

    def states(self) -> dict[str, str]:
        """Model -> state of every breaker used so far (`get()` a model to include it)."""
        with self._lock:
            return {model: breaker.state for model, breaker in sorted(self._breakers.items())}
