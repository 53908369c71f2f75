"""What the user says of an answer: good or bad, kept beside the request it judges.

Feedback is append only: giving it again adds a row and the newest row counts. It is what
`orchestra train-complexity` learns from (a local answer marked bad: the prompt needed a
stronger tier).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict

from orchestra.errors import RequestError
from orchestra.store import Store

MIN_PREFIX = 6  # `orchestra history` shows 12 characters; fewer than 6 would collide too often
MAX_NOTE_CHARS = 2_000

_INSERT = "INSERT INTO feedback (request_id, at, good, note) VALUES (?, ?, ?, ?)"


class Feedback(BaseModel):
    """One judgement of one answer, as recorded."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str
    good: bool
    at: float
    note: str | None = None
    model: str | None = None
    tier: str | None = None


async def find_request(store: Store, ref: str) -> tuple[str, str | None, str | None]:
    """(id, model, tier) of the request whose id is `ref` or starts with it (unique prefix)."""
    ref = ref.strip()
    if not ref:
        raise RequestError("a request id is required (see `orchestra history`)")
    rows = await store.fetch("SELECT id, model, tier FROM requests WHERE id = ?", (ref,))
    if not rows and len(ref) >= MIN_PREFIX:
        rows = await store.fetch(
            "SELECT id, model, tier FROM requests WHERE substr(id, 1, ?) = ? LIMIT 3",
            (len(ref), ref),
        )
    if not rows:
        short = len(ref) < MIN_PREFIX
        hint = f" (a prefix needs at least {MIN_PREFIX} characters)" if short else ""
        raise RequestError(f"no recorded request {ref!r}{hint}; see `orchestra history`")
    if len(rows) > 1:
        raise RequestError(f"{ref!r} matches several requests; give more of the id")
    rid, model, tier = rows[0]
    return str(rid), model, tier


async def record_feedback(
    store: Store,
    ref: str,
    good: bool,
    note: str | None = None,
    *,
    redact: Callable[[str], str] | None = None,
    now: float | None = None,
) -> Feedback:
    """Record that the answer to request `ref` (an id or unique prefix) was good or bad.

    The note is stored after `redact` (secrets never reach the database) and is cut to
    MAX_NOTE_CHARS. Returns once the row is committed.
    """
    if not isinstance(good, bool):
        raise RequestError(f"good must be True or False, got {good!r}")
    await store.flush()  # a request answered a moment ago must be findable
    rid, model, tier = await find_request(store, ref)
    if note is not None:
        note = (redact(note) if redact else note).strip()[:MAX_NOTE_CHARS] or None
    at = time.time() if now is None else now
    store.write_later(_INSERT, (rid, at, int(good), note))
    await store.flush()
    return Feedback(request_id=rid, good=good, at=at, note=note, model=model, tier=tier)
