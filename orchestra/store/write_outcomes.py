"""How a store's writer tells each waiter how its write went: the same on every backend."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Protocol

from orchestra.core.errors import StoreError
from orchestra.spend.ledger import Hold, Refusal

log = logging.getLogger("orchestra.store")


class Settled(Protocol):
    """A queued write as settling sees it (`Write` on SQLite, `PgWrite` on PostgreSQL)."""

    done: asyncio.Future[Any] | None
    quiet: bool
    result: object
    error: BaseException | None

    @property
    def marker(self) -> bool: ...


def settle(batch: Sequence[Settled], unreported: StoreError | None) -> StoreError | None:
    """(Event loop) Tell each waiter how its write went; a failure nobody waits for is kept for
    the batch's flush markers (or logged, for best-effort writes such as samples). Returns the
    failure no marker has reported yet."""
    for w in batch:
        if w.marker:
            continue
        error = None if w.error is None else store_error(w.error)
        if w.done is not None and not w.done.done():
            if error is None:
                w.done.set_result(w.result)
            else:
                w.done.set_exception(error)
                w.done.exception()  # a caller that gave up waiting must not leave it unseen
        elif error is not None and w.quiet:
            log.warning("store: a write failed and is dropped: %s", error)
        elif error is not None:
            unreported = error
    for w in batch:
        if w.marker and w.done is not None and not w.done.done():
            failed, unreported = unreported, None
            if failed is None:
                w.done.set_result(None)
            else:
                w.done.set_exception(failed)
    return unreported


def store_error(exc: BaseException) -> StoreError:
    """`exc` as the `StoreError` a writer's caller sees."""
    if isinstance(exc, StoreError):
        return exc
    return StoreError(f"a write to the store failed: {type(exc).__name__}: {exc}")


async def granted(done: asyncio.Future[Any], release: Callable[[Hold], None]) -> Hold | Refusal:
    """The reservation `done` resolves to. A caller cancelled while it is being decided (a client
    that left, a deadline) will never make its call: a hold granted all the same is released as
    soon as it is known, not left to expire and be charged as a call that may have been billed."""
    try:
        got = await asyncio.shield(done)
    except asyncio.CancelledError:
        done.add_done_callback(partial(_give_back, release))
        raise
    assert isinstance(got, Hold | Refusal)
    return got


def _give_back(release: Callable[[Hold], None], done: asyncio.Future[Any]) -> None:
    if done.cancelled() or done.exception() is not None:
        return
    got = done.result()
    if isinstance(got, Hold):
        try:
            release(got)
        except StoreError as exc:  # closing: the hold expires, and is charged, as a dead one's
            log.warning("store: a reservation nobody waits for could not be released: %s", exc)
