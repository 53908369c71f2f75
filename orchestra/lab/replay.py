"""Replay: decide every stored request again, under other policies, from its stored verdicts.

`replay()` reads the history from the store in batches and reports, per policy, the tier mix, an
estimated cost, agreement with what actually happened and how many requests no model could have
answered. The work itself is `replay_rows.replay_part`, in this process or, for a long history,
in a process per CPU (`replay_parallel`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from orchestra.core.catalog import Catalog
from orchestra.core.tier import TIERS
from orchestra.lab.replay_parallel import replay_parallel
from orchestra.lab.replay_rows import ReplayedRequest, replay_part
from orchestra.lab.report import PolicyReport
from orchestra.policies.base import Policy
from orchestra.policies.routing import router
from orchestra.store import Store

__all__ = ["PolicyReport", "ReplayedRequest", "render", "replay"]

# Below this many requests, another process's start-up (~0.2 s) does not pay for itself.
PARALLEL_FROM = 20_000
MAX_WORKERS = 4


async def replay(
    store: Store,
    catalog: Catalog,
    policies: Sequence[Policy],
    since: float | None = None,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
) -> list[PolicyReport]:
    """Decide the stored requests (newest first: `limit` of them, created at or after `since`)
    again under each policy; `progress(done, total)` is called after each batch.

    A built-in policy is asked for its route alone (`orchestra.policies.routing`): the same
    candidates and target as `decide`, without the explanation. Only when some policy is not a
    built-in are whole requests (messages, features) and verdicts (each with its own time) built.

    A long history replayed under built-in policies is split between `workers` processes (by
    default one per CPU, up to 4; see `orchestra.lab.replay_parallel`), when the store can be
    opened by another process and every request since `since` is replayed (no `limit` below
    their number). The reports are the same, but for the order their costs are summed in.
    """
    await store.flush()
    count = await store.count_requests(since)
    total = count if limit is None else min(count, limit)
    parts = _parts(store, policies, total, limit is None or limit >= count, workers)
    if progress is not None:
        progress(0, total)
    if parts > 1:
        return await replay_parallel(store, catalog, policies, since, total, parts, progress)
    done = 0

    def counted(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    return await replay_part(store, catalog, policies, since, total, (0, 1), counted)


def _parts(
    store: Store, policies: Sequence[Policy], total: int, whole: bool, workers: int | None
) -> int:
    """How many processes share the replay: 1 unless it can be split and pays."""
    if workers is None:
        workers = min(_cpus(), MAX_WORKERS) if total >= PARALLEL_FROM else 1
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if workers == 1 or not whole or store.opener() is None:
        return 1
    if any(router(p) is None for p in policies):
        return 1  # a policy of the caller's own may hold state a copy in another process lacks
    return workers


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def render(reports: Sequence[PolicyReport], console: Any = None) -> None:
    """Print the reports as a rich table (one column per policy)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    if not reports:
        return

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x:.1%}"

    first = reports[0]
    table = Table(title=f"Replay of {first.requests} request(s)")
    table.add_column("")
    table.add_column("actual", style="dim")
    for rep in reports:
        table.add_column(rep.policy)
    for t in TIERS:
        table.add_row(
            f"{t} share",
            pct(first.actual_tier_mix[t.value]),
            *(pct(r.tier_mix[t.value]) for r in reports),
        )
    table.add_row(
        "cost (USD)",
        f"{first.actual_cost_usd:.6f}",
        *(f"{r.estimated_cost_usd:.6f}" for r in reports),
    )
    if any(r.unmetered for r in reports):
        table.add_row(
            "+ unmetered (est.)",
            "",
            *(f"{r.unmetered_cost_usd:.6f} ({r.unmetered})" for r in reports),
        )
    table.add_row("same model", "", *(pct(r.model_agreement_rate) for r in reports))
    table.add_row("same tier", "", *(pct(r.tier_agreement_rate) for r in reports))
    table.add_row("same decision", "", *(pct(r.decision_agreement_rate) for r in reports))
    table.add_row(
        "no allowed model",
        str(first.refused_live),
        *(str(r.no_allowed_model) for r in reports),
    )
    table.add_row("other errors", "", *(str(r.errors) for r in reports))
    console.print(table)
