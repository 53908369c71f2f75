"""Reads that take more than one query, written once over a backend's own queries: history
(with shared values and feedback), judged requests, and replay's keyset pages."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orchestra.store.shaping as shaping
from orchestra.core.feedback import Judged
from orchestra.core.paused_gc import paused_gc
from orchestra.store.base import ReplayBatch
from orchestra.store.detail import decode, decode_lean, lean_refs, refs_of

Rows = list[tuple[Any, ...]]
Shared = Callable[[set[str]], Awaitable[dict[str, str]]]
Feedback = Callable[[list[str]], Awaitable[dict[str, dict[str, Any]]]]
# A page of replay rows: (since, the last row's (created_at, key) or None, size) -> rows.
Page = Callable[[float, tuple[float, int] | None, int], Awaitable[Rows]]


async def history(rows: Rows, shared: Shared, feedback: Feedback) -> list[dict[str, Any]]:
    """History rows (see `shaping.history_entry`), each with its newest feedback."""
    details = shaping.details(rows)
    values = await shared(shaping.refs(details))
    latest = await feedback([r[0] for r in rows])
    return [
        {**shaping.history_entry(r, d, values), "feedback": latest.get(r[0])}
        for r, d in zip(rows, details, strict=True)
    ]


async def judged(rows: Rows, shared: Shared) -> list[Judged]:
    """Rows (id, status, tier, prompt, good, detail) as judged requests."""
    out = []
    for rid, status, tier, prompt, good, blob in rows:
        metrics = None
        if blob is not None:
            detail = decode(blob)
            metrics = shaping.complexity_metrics(detail, await shared(set(refs_of(detail))))
        out.append(Judged(rid, status, tier, prompt, bool(good), metrics))
    return out


async def replay(
    page: Page, shared: Shared, since: float | None, limit: int | None, batch: int
) -> AsyncIterator[ReplayBatch]:
    """Pages newest first, each after the last row seen (rows begin with their key, then id,
    then created_at), `limit` rows in all (None: every one)."""
    since_ = since if since is not None else float("-inf")
    left = limit if limit is not None else -1
    cursor: tuple[float, int] | None = None
    while left != 0:
        size = batch if left < 0 else min(batch, left)
        rows = await page(since_, cursor, size)
        if not rows:
            return
        cursor = (rows[-1][2], rows[-1][0])
        left = left - len(rows) if left > 0 else left
        with paused_gc():  # thousands of small objects, all kept: see `paused_gc`
            details = [decode_lean(r[-1]) if r[-1] is not None else {} for r in rows]
            refs = lean_refs(details)
        yield ReplayBatch(rows, details, await shared(refs))
