"""Circuit breakers: one suite run against memory and SQLite storage, plus a stateful property test.

A fake clock drives every transition: nothing here sleeps.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from orchestra.execution.breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerBoard,
    BreakerListener,
    BreakerRecord,
    BreakerSettings,
    LoggingBreakerListener,
    MemoryBreakerStorage,
)
from orchestra.store import Store, open_store
from orchestra.store.breaker_storage import StoreBreakerStorage

MODEL = "openai/gpt-test"
T0 = 1_700_000_000.0


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Recorder(BreakerListener):
    def __init__(self) -> None:
        self.changes: list[tuple[str, str, str]] = []
        self.failures: list[str] = []

    def state_changed(self, model: str, old: str, new: str, reason: str) -> None:
        self.changes.append((model, old, new))

    def failure(self, model: str, reason: str) -> None:
        self.failures.append(reason)


class Exploding(BreakerListener):
    def state_changed(self, model: str, old: str, new: str, reason: str) -> None:
        raise RuntimeError("listener bug")

    def failure(self, model: str, reason: str) -> None:
        raise RuntimeError("listener bug")


# -- the two storages behind one harness -------------------------------------------------------


class MemoryBackend:
    """A "restart" is a new board on the same storage object."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.storage = MemoryBreakerStorage()

    async def board(
        self, listeners: Sequence[BreakerListener] = (), **overrides: float
    ) -> BreakerBoard:
        return BreakerBoard(BreakerSettings(**overrides), self.storage, self.clock, listeners)

    async def transitions(self, model: str = MODEL) -> list[tuple[str, str]]:
        return [(e.from_state, e.to_state) for e in self.storage.events if e.model == model]

    async def record(self, model: str = MODEL) -> BreakerRecord | None:
        return self.storage.load(model)

    async def close(self) -> None:
        pass


class SqliteBackend:
    """A "restart" closes the store and opens a new one (and a new storage) on the same file
    (or the same PostgreSQL database: `path` is then its URL)."""

    def __init__(self, path: Path | str, home: Path | None = None) -> None:
        self.clock = FakeClock()
        self.path = path
        self.home = home
        self.store: Store | None = None

    async def board(
        self, listeners: Sequence[BreakerListener] = (), **overrides: float
    ) -> BreakerBoard:
        await self.close()
        self.store = await open_store(self.path, home=self.home).open()
        storage = StoreBreakerStorage(self.store)
        await storage.preload()
        return BreakerBoard(BreakerSettings(**overrides), storage, self.clock, listeners)

    async def transitions(self, model: str = MODEL) -> list[tuple[str, str]]:
        assert self.store is not None
        await self.store.flush()
        rows = await self.store.fetch(
            "SELECT from_state, to_state FROM breaker_events WHERE model = ? ORDER BY id", (model,)
        )
        return [(a, b) for a, b in rows]

    async def record(self, model: str = MODEL) -> BreakerRecord | None:
        assert self.store is not None
        await self.store.flush()
        rows = await self.store.fetch(
            "SELECT state, failures, opened_at, updated_at FROM breaker_state WHERE model = ?",
            (model,),
        )
        if not rows:
            return None
        state, failures, opened_at, updated_at = rows[0]
        return BreakerRecord(
            state=state, failures=failures, opened_at=opened_at, updated_at=updated_at
        )

    async def close(self) -> None:
        if self.store is not None:
            await self.store.close()
            self.store = None


Backend = MemoryBackend | SqliteBackend


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path | None:
    """Where breakers are kept: in memory (None), a SQLite file, a PostgreSQL database."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    return None if request.param == "memory" else tmp_path / "orchestra.db"


@pytest.fixture
async def backend(where: str | Path | None, tmp_path: Path) -> AsyncIterator[Backend]:
    chosen: Backend = MemoryBackend() if where is None else SqliteBackend(where, tmp_path)
    yield chosen
    await chosen.close()


def trip(board: BreakerBoard, model: str = MODEL) -> None:
    breaker = board.get(model)
    while breaker.state == CLOSED:
        breaker.record_failure("timeout")


# -- the lifecycle -----------------------------------------------------------------------------


async def test_a_new_breaker_is_closed_and_allows(backend: Backend) -> None:
    board = await backend.board()
    breaker = board.get(MODEL)
    assert (breaker.state, breaker.allow(), breaker.why_not()) == (CLOSED, True, "")
    assert breaker.retry_in() == 0.0
    assert board.get(MODEL) is breaker
    assert await backend.record() is None  # successes alone write nothing


async def test_consecutive_failures_open_it_for_the_recovery_period(backend: Backend) -> None:
    breaker = (await backend.board()).get(MODEL)
    breaker.record_failure("timeout")
    breaker.record_failure("timeout")
    assert breaker.state == CLOSED
    breaker.record_failure("timeout")
    assert breaker.state == OPEN
    assert not breaker.allow()
    assert breaker.why_not() == "breaker open (60 s left)"
    backend.clock.advance(17.5)
    assert not breaker.allow()
    assert breaker.why_not() == "breaker open (43 s left)"
    assert breaker.retry_in() == 42.5  # what a 503 tells a client to wait
    record = await backend.record()
    assert record is not None
    assert (record.state, record.failures, record.opened_at) == (OPEN, 3, T0)


async def test_a_success_resets_the_consecutive_count(backend: Backend) -> None:
    breaker = (await backend.board()).get(MODEL)
    for outcome in "FFSFF":
        breaker.record_success() if outcome == "S" else breaker.record_failure()
    assert breaker.state == CLOSED


async def test_trial_success_closes_and_resets_counters(backend: Backend) -> None:
    board = await backend.board()
    breaker = board.get(MODEL)
    trip(board)
    backend.clock.advance(60)
    assert breaker.allow()
    assert breaker.state == HALF_OPEN
    breaker.record_success()
    assert (breaker.state, breaker.allow()) == (CLOSED, True)
    record = await backend.record()
    assert record is not None
    assert (record.state, record.failures) == (CLOSED, 0)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == CLOSED  # the count started again from zero
    assert await backend.transitions() == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


async def test_trial_failure_reopens_for_a_fresh_period(backend: Backend) -> None:
    board = await backend.board()
    breaker = board.get(MODEL)
    trip(board)
    backend.clock.advance(75)
    assert breaker.allow()
    breaker.record_failure("still down")
    assert breaker.state == OPEN
    assert breaker.why_not() == "breaker open (60 s left)"
    backend.clock.advance(59.9)
    assert not breaker.allow()
    backend.clock.advance(0.1)
    assert breaker.allow()
    record = await backend.record()
    assert record is not None and record.opened_at == T0 + 75
    assert await backend.transitions() == [
        (CLOSED, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, OPEN),
        (OPEN, HALF_OPEN),
    ]


async def test_half_open_lets_exactly_one_trial_through(backend: Backend) -> None:
    board = await backend.board()
    breaker = board.get(MODEL)
    trip(board)
    backend.clock.advance(60)
    assert [breaker.allow() for _ in range(5)] == [True, False, False, False, False]
    assert breaker.why_not() == "breaker half-open (trial call in flight)"
    assert breaker.retry_in() is None  # the trial's outcome decides
    # A trial whose caller never reports is presumed lost after one recovery period.
    backend.clock.advance(59)
    assert not breaker.allow()
    backend.clock.advance(1)
    assert [breaker.allow() for _ in range(3)] == [True, False, False]


async def test_a_released_trial_goes_to_the_next_caller(backend: Backend) -> None:
    board = await backend.board()
    breaker = board.get(MODEL)
    breaker.release()  # closed: nothing to give back
    trip(board)
    breaker.release()
    assert not breaker.allow(), "open: a release lets nothing through"
    backend.clock.advance(60)
    assert [breaker.allow(), breaker.allow()] == [True, False]
    breaker.release()  # the trial call was never made, or taught nothing
    assert [breaker.allow(), breaker.allow()] == [True, False]
    assert breaker.state == HALF_OPEN


async def test_failure_rate_over_the_window_trips_it(backend: Backend) -> None:
    breaker = (await backend.board()).get(MODEL)
    for _ in range(4):  # 8 calls at 50 %: too few calls to judge
        breaker.record_success()
        breaker.record_failure()
    breaker.record_success()
    assert breaker.state == CLOSED
    breaker.record_failure("500")  # 10 calls, 5 failed, never 3 in a row
    assert breaker.state == OPEN
    assert await backend.transitions() == [(CLOSED, OPEN)]


async def test_the_window_slides(backend: Backend) -> None:
    settings = {"failure_threshold": 10, "window": 4, "min_calls": 4, "failure_rate": 0.75}
    breaker = (await backend.board(**settings)).get(MODEL)
    for outcome in "FFSSSSFF":  # the last four: S S F F, 50 %
        breaker.record_success() if outcome == "S" else breaker.record_failure()
    assert breaker.state == CLOSED
    breaker.record_failure()  # S F F F, 75 %
    assert breaker.state == OPEN


# -- persistence -------------------------------------------------------------------------------


async def test_an_open_breaker_survives_a_restart(backend: Backend) -> None:
    trip(await backend.board())
    backend.clock.advance(20)
    breaker = (await backend.board()).get(MODEL)
    assert breaker.state == OPEN
    assert breaker.why_not() == "breaker open (40 s left)"
    record = await backend.record()
    assert record is not None and record.opened_at == T0
    assert await backend.transitions() == [(CLOSED, OPEN)]
    backend.clock.advance(40)
    assert breaker.allow()


async def test_the_failure_count_survives_a_restart(backend: Backend) -> None:
    breaker = (await backend.board()).get(MODEL)
    breaker.record_failure()
    breaker.record_failure()
    breaker = (await backend.board()).get(MODEL)
    assert breaker.state == CLOSED
    breaker.record_failure()
    assert breaker.state == OPEN


async def test_a_restart_during_half_open_allows_a_new_trial(backend: Backend) -> None:
    board = await backend.board()
    trip(board)
    backend.clock.advance(60)
    assert board.get(MODEL).allow()  # the trial dies with the process
    breaker = (await backend.board()).get(MODEL)
    assert breaker.state == HALF_OPEN
    assert [breaker.allow(), breaker.allow()] == [True, False]


async def test_models_are_independent(backend: Backend) -> None:
    board = await backend.board()
    trip(board, "a")
    board.get("b").record_failure()
    assert board.states() == {"a": OPEN, "b": CLOSED}
    assert board.get("b").allow()
    assert await backend.transitions("b") == []


# -- listeners ---------------------------------------------------------------------------------


async def test_listeners_hear_every_transition(backend: Backend) -> None:
    first, second = Recorder(), Recorder()
    board = await backend.board(listeners=[first, second])
    breaker = board.get(MODEL)
    trip(board)
    backend.clock.advance(60)
    breaker.allow()
    breaker.record_failure("again")
    backend.clock.advance(60)
    breaker.allow()
    breaker.record_success()
    expected = [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, OPEN), (OPEN, HALF_OPEN)]
    expected.append((HALF_OPEN, CLOSED))
    assert first.changes == second.changes == [(MODEL, a, b) for a, b in expected]
    assert first.failures == ["timeout"] * 3 + ["again"]
    assert await backend.transitions() == expected


async def test_a_raising_listener_never_breaks_the_breaker(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder()
    board = await backend.board(listeners=[Exploding(), recorder])
    breaker = board.get(MODEL)
    with caplog.at_level(logging.ERROR, logger="orchestra.breaker"):
        trip(board)
    assert breaker.state == OPEN
    assert recorder.changes == [(MODEL, CLOSED, OPEN)]
    assert await backend.transitions() == [(CLOSED, OPEN)]
    assert "listener state_changed failed" in caplog.text


async def test_the_logging_listener_warns_only_when_a_breaker_opens(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    board = await backend.board(listeners=[LoggingBreakerListener()])
    with caplog.at_level(logging.INFO, logger="orchestra.breaker"):
        trip(board)
        backend.clock.advance(60)
        board.get(MODEL).allow()
        board.get(MODEL).record_success()
    levels = [(r.levelno, r.getMessage().split(" (")[0]) for r in caplog.records]
    assert levels == [
        (logging.WARNING, f"breaker {MODEL}: closed -> open"),
        (logging.INFO, f"breaker {MODEL}: open -> half_open"),
        (logging.INFO, f"breaker {MODEL}: half_open -> closed"),
    ]
    assert "3 consecutive failures (last: timeout)" in caplog.records[0].getMessage()


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        BreakerSettings(failure_threshold=0)
    with pytest.raises(ValueError):
        BreakerSettings(failure_rate=1.5)
    with pytest.raises(ValueError):
        BreakerSettings(recovery_s=0)


def test_an_unknown_stored_state_starts_closed() -> None:
    storage = MemoryBreakerStorage()
    storage.save(MODEL, BreakerRecord(state="melted", failures=9, opened_at=T0, updated_at=T0))
    assert BreakerBoard(storage=storage, clock=FakeClock()).get(MODEL).state == CLOSED


# -- the stateful property test ----------------------------------------------------------------

SMALL = BreakerSettings(failure_threshold=3, recovery_s=10.0, window=6, min_calls=4)


class BreakerMachine(RuleBasedStateMachine):
    """Random calls, outcomes and clock steps against a model of what the breaker must do."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.storage = MemoryBreakerStorage()
        self.breaker = BreakerBoard(SMALL, self.storage, self.clock).get(MODEL)
        self.consecutive = 0  # failures since the last success, whatever the state
        self.outcomes: deque[bool] = deque(maxlen=SMALL.window)  # since entering CLOSED
        self.trial_at: float | None = None  # when the outstanding half-open trial went out

    def _outcome(self, failed: bool) -> None:
        was_closed = self.breaker.state == CLOSED
        if failed:
            self.breaker.record_failure("boom")
            self.consecutive += 1
        else:
            self.breaker.record_success()
            self.consecutive = 0
        self.trial_at = None
        if was_closed:
            self.outcomes.append(failed)
            # Only a failure trips it, and exactly when one of the two conditions holds.
            calls = len(self.outcomes)
            rate_high = (
                calls >= SMALL.min_calls and sum(self.outcomes) / calls >= SMALL.failure_rate
            )
            should_trip = failed and (rate_high or self.consecutive >= SMALL.failure_threshold)
            assert (self.breaker.state == OPEN) == should_trip
        if self.breaker.state != CLOSED:
            self.outcomes.clear()

    @rule()
    def success(self) -> None:
        self._outcome(failed=False)

    @rule()
    def failure(self) -> None:
        self._outcome(failed=True)

    @rule(seconds=st.one_of(st.sampled_from([9.999, 10.0]), st.floats(0, 25)))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def allow(self) -> None:
        before, now = self.breaker.state, self.clock()
        allowed = self.breaker.allow()
        if before == OPEN and now - self._opened_at() < SMALL.recovery_s:
            assert not allowed
        if before == HALF_OPEN and self._trial_out():
            assert not allowed
        if allowed and self.breaker.state == HALF_OPEN:
            self.trial_at = now
        assert allowed or self.breaker.why_not()

    def _opened_at(self) -> float:
        record = self.storage.load(MODEL)
        assert record is not None and record.opened_at is not None
        return record.opened_at

    def _trial_out(self) -> bool:
        return self.trial_at is not None and self.clock() - self.trial_at < SMALL.recovery_s

    @invariant()
    def state_is_known_and_stored(self) -> None:
        assert self.breaker.state in (CLOSED, OPEN, HALF_OPEN)
        record = self.storage.load(MODEL)
        assert record is None or record.state == self.breaker.state

    @invariant()
    def closed_always_allows(self) -> None:
        if self.breaker.state == CLOSED:
            assert self.breaker.allow() and self.breaker.why_not() == ""

    @invariant()
    def open_refuses_until_recovery(self) -> None:
        if self.breaker.state == OPEN and self.clock() - self._opened_at() < SMALL.recovery_s:
            assert not self.breaker.allow()
            assert self.breaker.why_not().startswith("breaker open (")

    @invariant()
    def half_open_has_at_most_one_trial(self) -> None:
        if self.breaker.state == HALF_OPEN and self._trial_out():
            assert not self.breaker.allow()

    @invariant()
    def enough_consecutive_failures_never_stay_closed(self) -> None:
        if self.consecutive >= SMALL.failure_threshold:
            assert self.breaker.state != CLOSED


BreakerMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestBreakerMachine = BreakerMachine.TestCase
