"""The routes beside chat: models, health, status, metrics, feedback and history.

`/status`, `/metrics` and `/v1/history` hold everything a dashboard needs: agents, breakers,
health, budget and spend now; counts and latencies since the start; recorded requests.
"""

from __future__ import annotations

import os
import time
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from orchestra.core.errors import OrchestraError, RequestError
from orchestra.server import shapes
from orchestra.server.body import read_json
from orchestra.server.errors import api_error, bad_request
from orchestra.server.metrics import CONTENT_TYPE, Snapshot
from orchestra.server.state import ServerState, state_of

MAX_HISTORY = 1000


async def health(request: Request) -> Response:
    """Liveness: the process answers (it takes traffic only once its runtime is ready)."""
    return JSONResponse({"status": "ok"})


async def list_models(request: Request) -> Response:
    return JSONResponse(shapes.model_list(state_of(request).orc.catalog))


async def get_model(request: Request) -> Response:
    name = request.path_params["name"]
    if name == shapes.AUTO:
        return JSONResponse(shapes.model_object(None))
    try:
        spec = state_of(request).orc.catalog.get(name)
    except OrchestraError as exc:
        raise api_error(exc) from None
    return JSONResponse(shapes.model_object(spec))


async def status(request: Request) -> Response:
    """Agents' verdicts, breakers, health checks, budget and spend, as JSON."""
    state = state_of(request)
    orc = state.orc
    now = time.time()
    verdicts = await orc.verdicts()
    breakers = breakers_of(state)
    health = health_of(state)
    totals = await orc.store.spend_totals()  # the ledger now, every worker's spend in it
    summary = await orc.spend_summary()
    budget = orc.config.budget
    return JSONResponse(
        {
            "version": _version(),
            "pid": os.getpid(),
            "started_at": state.started_at,
            "uptime_s": round(now - state.started_at, 3),
            "models": [
                {
                    "name": m.name,
                    "tier": m.tier.value,
                    "breaker": breakers.get(m.name, "closed"),
                    "healthy": health.get(m.name, {}).get("healthy"),
                }
                for m in orc.catalog
            ],
            "agents": [v.model_dump(mode="json") for v in verdicts],
            "breakers": breakers,
            "health": health,
            "budget": budget.model_dump(mode="json"),
            "spend": {
                **summary,
                "reserved_usd": totals.reserved_usd,
                "last_hour_usd": totals.last_hour_usd,
            },
        }
    )


async def metrics(request: Request) -> Response:
    state = state_of(request)
    orc = state.orc
    budget = orc.config.budget
    breakers = breakers_of(state)
    totals = await orc.store.spend_totals()  # the ledger now, every worker's spend in it
    snapshot = Snapshot(
        spend_today_usd=totals.today_usd,
        spend_month_usd=totals.month_usd,
        reserved_usd=totals.reserved_usd,
        daily_budget_usd=budget.daily_usd,
        monthly_budget_usd=budget.monthly_usd,
        breakers=breakers,
        tiers={m.name: m.tier.value for m in orc.catalog},
        healthy={
            name: h["healthy"] for name, h in health_of(state).items() if h["healthy"] is not None
        },
        agents=await orc.verdicts(),
    )
    return Response(state.metrics.exposition(snapshot), media_type=CONTENT_TYPE)


async def feedback(request: Request) -> Response:
    """`{"request_id", "good", "note"}`, as `orchestra feedback`."""
    state = state_of(request)
    body = await read_json(request, state.config.server.max_body_bytes)
    ref, good, note = body.get("request_id"), body.get("good"), body.get("note")
    if not isinstance(ref, str):
        raise bad_request("request_id must be a string", "request_id")
    if not isinstance(good, bool):
        raise bad_request("good must be true or false", "good")
    if note is not None and not isinstance(note, str):
        raise bad_request("note must be a string", "note")
    try:
        given = await state.orc.feedback(ref, good, note)
    except RequestError as exc:
        raise bad_request(str(exc), "request_id") from None
    except OrchestraError as exc:
        raise api_error(exc) from None
    return JSONResponse({"object": "feedback", **given.model_dump(mode="json")})


async def verdicts(request: Request) -> Response:
    """Every agent's verdict for `{"prompt": ...}` (default "hello"), no model called: what
    `orchestra agents` shows."""
    state = state_of(request)
    body = await read_json(request, state.config.server.max_body_bytes)
    prompt = body.get("prompt", "hello")
    if not isinstance(prompt, str) or not prompt:
        raise bad_request("prompt must be a non-empty string", "prompt")
    try:
        found = await state.orc.verdicts(prompt)
    except OrchestraError as exc:
        raise api_error(exc) from None
    return JSONResponse({"object": "list", "data": [v.model_dump(mode="json") for v in found]})


async def spend(request: Request) -> Response:
    """Spend today, this month and in all, by model, with the budget: what `orchestra spend`
    shows."""
    try:
        summary = await state_of(request).orc.spend_summary()
    except OrchestraError as exc:
        raise api_error(exc) from None
    return JSONResponse(summary)


async def history(request: Request) -> Response:
    """Recorded requests, newest first (`?limit=N`, at most 1000; `?since=UNIX_TIME`)."""
    params = request.query_params
    try:
        limit = int(params.get("limit", "20"))
        since = float(params["since"]) if "since" in params else None
    except ValueError:
        raise bad_request("limit must be an integer and since a number", "limit") from None
    if not 1 <= limit <= MAX_HISTORY:
        raise bad_request(f"limit must be between 1 and {MAX_HISTORY}", "limit")
    try:
        entries = await state_of(request).orc.history(limit=limit, since=since)
    except OrchestraError as exc:
        raise api_error(exc) from None
    return JSONResponse({"object": "list", "data": entries})


def breakers_of(state: ServerState) -> dict[str, str]:
    """Every catalog model's breaker in this process (closed until the executor is built)."""
    executor = state.orc.executor
    board = executor.safeguards.breakers if executor is not None else None
    if board is None:
        return {m.name: "closed" for m in state.orc.catalog}
    return {m.name: board.get(m.name).state for m in state.orc.catalog}


def health_of(state: ServerState) -> dict[str, dict[str, Any]]:
    executor = state.orc.executor
    checker = executor.safeguards.health if executor is not None else None
    if checker is None:
        return {}
    return {
        name: {
            "healthy": s.healthy,
            "latency_ms": s.latency_ms,
            "checked_at": s.checked_at,
            "error": s.error,
        }
        for name, s in checker.statuses().items()
    }


@cache
def _version() -> str:
    try:
        return version("orchestra-llm")
    except PackageNotFoundError:
        return "unknown"
