"""The dashboard: one static page (`GET /`) and the two JSON routes it reads beside `/status`,
`/metrics` and `/v1/history`.

The page holds no data and needs no token to load; every route it reads does (when one is set),
and the page asks for it. `/dashboard/spend` is spend over time from the store's running sums;
`/dashboard/models` is each model's latency, error rate, breaker and health, from the attempts of
the last few hundred recorded requests (an indexed read of a bounded number of rows).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.staticfiles import StaticFiles

from orchestra.core.errors import OrchestraError
from orchestra.server.errors import api_error, bad_request
from orchestra.server.routes import breakers_of, health_of
from orchestra.server.state import state_of

STATIC = Path(__file__).parent / "static"
STATIC_PREFIX = "/static/"
PAGE_PATH = "/"
SERIES_DAYS = 30
MAX_SERIES_DAYS = 366
STATS_WINDOW = 200  # recorded requests whose attempts make each model's numbers


def static_files() -> StaticFiles:
    return StaticFiles(directory=STATIC)


# The browser itself holds the page to "nothing from elsewhere, no inline script".
PAGE_HEADERS = {
    "cache-control": "no-cache",
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none';"
        " form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
}


async def page(request: Request) -> Response:
    """The page itself: static HTML; its script reads the data routes."""
    return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)


async def spend(request: Request) -> Response:
    """Spend per day (`?days=N`, 30 by default) and per hour (48 h), with the budget and the
    totals of today and this month."""
    try:
        days = int(request.query_params.get("days", str(SERIES_DAYS)))
    except ValueError:
        raise bad_request("days must be an integer", "days") from None
    if not 1 <= days <= MAX_SERIES_DAYS:
        raise bad_request(f"days must be between 1 and {MAX_SERIES_DAYS}", "days")
    orc = state_of(request).orc
    try:
        series = await orc.store.spend_series(days=days)
        totals = await orc.store.spend_totals()
    except OrchestraError as exc:
        raise api_error(exc) from None
    return JSONResponse(
        {
            **series,
            "today_usd": totals.today_usd,
            "month_usd": totals.month_usd,
            "reserved_usd": totals.reserved_usd,
            "last_hour_usd": totals.last_hour_usd,
            "budget": orc.config.budget.model_dump(mode="json"),
        }
    )


async def models(request: Request) -> Response:
    """Each model's calls, errors, latency (p50, p95) over the last requests' attempts, with
    its breaker and its last health check."""
    state = state_of(request)
    orc = state.orc
    try:
        recent = await orc.history(limit=STATS_WINDOW)
    except OrchestraError as exc:
        raise api_error(exc) from None
    attempts = [a for entry in recent for a in entry["attempts"]]
    tiers = {m.name: m.tier.value for m in orc.catalog}
    breakers, health = breakers_of(state), health_of(state)
    seen = [a["model"] for a in attempts if a["model"] not in tiers]
    names = [*tiers, *dict.fromkeys(seen)]  # the catalog, then models since removed
    rows = [
        {
            "name": name,
            "tier": tiers.get(name) or _tier_seen(name, attempts),
            "in_catalog": name in tiers,
            "breaker": breakers.get(name),
            "health": health.get(name),
            **model_stats(a for a in attempts if a["model"] == name),
        }
        for name in names
    ]
    return JSONResponse({"window": len(recent), "models": rows})


def model_stats(attempts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Calls (cache hits and skips apart), failed calls and their share, and the latency of the
    answered calls (ms)."""
    calls = errors = skipped = cached = 0
    latencies: list[float] = []
    for a in attempts:
        if a.get("skipped"):
            skipped += 1
        elif a.get("cached"):
            cached += 1
        else:
            calls += 1
            if a["ok"]:
                latencies.append(float(a["latency_ms"]))
            else:
                errors += 1
    return {
        "calls": calls,
        "errors": errors,
        "error_rate": errors / calls if calls else None,
        "skipped": skipped,
        "cached": cached,
        "p50_ms": _quantile(latencies, 0.5),
        "p95_ms": _quantile(latencies, 0.95),
    }


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 1)
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return round(cuts[round(q * 100) - 1], 1)


def _tier_seen(name: str, attempts: Iterable[Mapping[str, Any]]) -> str | None:
    return next((str(a["tier"]) for a in attempts if a["model"] == name), None)
