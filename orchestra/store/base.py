"""The store's interface: every read and write Orchestra makes, as named methods.

A backend (SQLite, PostgreSQL) implements this class and nothing above the store sees
SQL. Writes go through one funnel per store: `record`, `record_sample` and the breaker and cache
writes only queue their rows; a writer commits them in batches (group commit). `record` returns
an awaitable that resolves once that record is committed, and `flush` waits for everything
queued before it; both raise `StoreError` when the write failed, never report success for a row
that is not on disk.
"""

from __future__ import annotations

import asyncio
import warnings
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple, Self

from orchestra.core.feedback import Judged, RequestRef
from orchestra.core.model_spec import ModelSpec
from orchestra.core.verdict import Verdict
from orchestra.execution.breaker.storage import BreakerRecord
from orchestra.execution.cache import CachedAnswer
from orchestra.spend.calendar import Calendar
from orchestra.spend.ledger import Ledger, SpendTotals
from orchestra.store.record import RequestRecord


class ReplayBatch(NamedTuple):
    """Stored requests, for `orchestra replay`: their rows (columns `REPLAY_REQUEST_COLUMNS`),
    each one's detail as `orchestra.store.detail.decode_lean` gives it, and the shared values
    the details refer to (key -> JSON)."""

    requests: list[tuple[Any, ...]]
    details: list[dict[str, Any]]
    shared: dict[str, str]


def checked_part(part: tuple[int, int]) -> tuple[int, int]:
    """`part` (k, n) of `Store.replay_batches`, or ValueError: n parts, 0 <= k < n."""
    k, n = part
    if type(k) is not int or type(n) is not int or n < 1 or not 0 <= k < n:
        raise ValueError(f"part must be (k, n) with 0 <= k < n, got {part!r}")
    return k, n


class StoredModel(NamedTuple):
    """A model added or changed while running (`spec`), or removed (`spec` is None).

    `version` grows with every change made by any process sharing the store."""

    name: str
    spec: ModelSpec | None
    version: int
    at: float


REPLAY_REQUEST_COLUMNS = (
    "rowid", "id", "created_at", "status", "model", "tier", "cost_usd", "prompt_tokens",
    "completion_tokens", "features", "prompt", "forced_model", "forced_tier", "error_kind",
    "detail",
)  # fmt: skip


class Store(Ledger, ABC):
    """Where Orchestra keeps requests, verdicts, attempts, spend, samples, breakers and the cache.

    It is also the `Ledger`: budget reservations are taken in its transactions, against the
    spend of every process (and host) that shares it.

    Open it with `await store.open()` or `async with store:`; close it with `await store.close()`
    (a store dropped open warns with `ResourceWarning`).
    """

    _open: bool = False
    calendar: Calendar  # the budget's days: the store's calendar once open (`budget_zone`)

    # -- lifecycle -------------------------------------------------------------------------------

    @abstractmethod
    async def open(self) -> Self:
        """Connect, migrate the schema to this version, start the writer."""

    @abstractmethod
    async def close(self) -> None:
        """Commit everything queued, stop the writer, disconnect."""

    @abstractmethod
    async def set_timezone(self, zone: str) -> None:
        """Make `zone` (an IANA name) the store's budget calendar, which every process opening
        the store from now on counts in (one running keeps the calendar it opened with). Days
        already counted keep their totals."""

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __del__(self) -> None:
        if self._open:
            warnings.warn(f"{self!r} was never closed", ResourceWarning, stacklevel=1)

    # -- the write funnel -----------------------------------------------------------------------

    @abstractmethod
    def record(self, record: RequestRecord) -> asyncio.Future[str]:
        """Queue a finished request (with its verdicts, attempts and ledger row); the future
        resolves to the id its record got once it is committed, or fails with `StoreError`.
        That id is the request's, unless another call's record already has it: a record never
        replaces another's, it gets a fresh id (see `RecordId`)."""

    @abstractmethod
    def record_sample(self, verdict: Verdict) -> None:
        """Queue an ambient agent's sample."""

    @abstractmethod
    async def flush(self) -> None:
        """Wait until everything queued before this call is committed; `StoreError` if a write
        failed since the last flush."""

    # -- history and spend -----------------------------------------------------------------------

    @abstractmethod
    async def history(self, limit: int = 20, since: float | None = None) -> list[dict[str, Any]]:
        """Stored requests, newest first, each with its decision, verdicts, attempts, feedback."""

    @abstractmethod
    async def samples(self, agent: str | None = None, limit: int = 100) -> list[Verdict]:
        """Ambient samples, newest first."""

    @abstractmethod
    async def spend_totals(self, now: float | None = None) -> SpendTotals:
        """Today, this month, live reservations and the last hour (USD) in the budget calendar,
        read from the ledger after everything queued."""

    @abstractmethod
    async def spend_summary(self, now: float | None = None) -> dict[str, Any]:
        """Today, this month, all time, this month by model, and the calendar's `timezone`."""

    @abstractmethod
    async def spend_series(self, days: int = 30, now: float | None = None) -> dict[str, Any]:
        """Spend over time from the running sums (never the ledger): per day for the last `days`
        days (cost and answers) and per hour for the last 48 hours, oldest first, gaps as 0."""

    # -- feedback --------------------------------------------------------------------------------

    @abstractmethod
    async def find_request(self, ref: str, min_prefix: int) -> list[RequestRef]:
        """Requests whose id is `ref`, else (if `ref` has `min_prefix`+ characters) whose id
        starts with it; at most a few."""

    @abstractmethod
    async def add_feedback(self, request_id: str, good: bool, note: str | None, at: float) -> None:
        """Append a judgement; returns once it is committed."""

    @abstractmethod
    async def judged_requests(self) -> list[Judged]:
        """Every judged request, with its newest judgement, oldest judgement first."""

    # -- circuit breakers ------------------------------------------------------------------------

    @abstractmethod
    async def breaker_records(self) -> dict[str, BreakerRecord]:
        """Every model's persisted breaker."""

    @abstractmethod
    def save_breaker(self, model: str, record: BreakerRecord) -> None:
        """Queue the replacement of a model's breaker record."""

    @abstractmethod
    def add_breaker_event(
        self, model: str, at: float, from_state: str, to_state: str, reason: str
    ) -> None:
        """Queue one breaker transition."""

    # -- response cache --------------------------------------------------------------------------

    @abstractmethod
    async def cached_answer(self, key: str, now: float) -> tuple[CachedAnswer, float] | None:
        """The unexpired answer stored under `key`, with its expiry time."""

    @abstractmethod
    def cache_answer(self, key: str, answer: CachedAnswer, expires_at: float) -> None:
        """Queue an answer for the cache."""

    @abstractmethod
    def purge_cache(self, now: float) -> None:
        """Queue the removal of every cache entry expired at `now`."""

    # -- models changed while running ------------------------------------------------------------

    @abstractmethod
    async def save_model(self, spec: ModelSpec, at: float) -> StoredModel:
        """Keep a model added or changed while running; returns once it is committed."""

    @abstractmethod
    async def drop_model(self, name: str, at: float) -> StoredModel:
        """Keep that a model was removed while running; returns once it is committed."""

    @abstractmethod
    async def stored_models(self, after_version: int = 0) -> list[StoredModel]:
        """The models changed while running, each as last changed, whose version is above
        `after_version`, in version order."""

    # -- replay ----------------------------------------------------------------------------------

    @abstractmethod
    async def count_requests(self, since: float | None = None) -> int:
        """How many requests were created at or after `since`."""

    @abstractmethod
    def replay_batches(
        self, since: float | None, limit: int | None, batch: int, part: tuple[int, int] = (0, 1)
    ) -> AsyncIterator[ReplayBatch]:
        """Stored requests created at or after `since`, newest first (`limit` of them), in
        batches of `batch`, each with its verdicts. `part` (k, n): only the requests of the k-th
        of n disjoint parts (by their row key), for replaying in n processes at once."""

    def opener(self) -> Callable[[], Store] | None:
        """A picklable callable giving a new, unopened store on the same data, for another
        process (a parallel replay's); None when this store cannot be shared so."""
        return None
