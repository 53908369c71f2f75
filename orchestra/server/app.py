"""The app factory: routes, middleware, and a lifespan that runs one `Orchestra` per process.

`orchestra serve` runs `app_from_env` through uvicorn's import string, once per worker: each
worker builds its own runtime (its agents, breakers and limiters) on the shared store, whose
ledger keeps every worker within one budget. The app takes traffic only once its runtime is
ready (LiteLLM imported, the executor built), so no request pays for the start.
"""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestra.config import Config, load_config
from orchestra.runtime import Orchestra
from orchestra.server import admin, dashboard, routes
from orchestra.server.auth import TokenAuth
from orchestra.server.chat import chat_completions
from orchestra.server.errors import ApiError, api_error
from orchestra.server.model_sync import ModelSync
from orchestra.server.state import ServerState

TOKEN_ENV = "ORCHESTRA_TOKEN"

RuntimeFactory = Callable[[Config], Orchestra]


def default_runtime(config: Config) -> Orchestra:
    """A long-lived runtime: the embedded model starts with it, beside LiteLLM's import, so no
    first request waits for either."""
    return Orchestra(config, warm_embedded=True)


def create_app(
    config: Config | None = None,
    *,
    token: str | None = None,
    runtime: RuntimeFactory = default_runtime,
    own_process: bool = False,
) -> Starlette:
    """The service for `config` (default: the usual file lookup). With `token`, every route but
    `/health` needs `Authorization: Bearer <token>`; without one, admin routes are refused.
    The dashboard page (`/`) and its static files load without the token; its data does not.
    `runtime` builds the process's `Orchestra` from the config (tests pass a test backend).
    `own_process`: the app is all this process runs (`orchestra serve`), so what start-up built
    is exempted from the cyclic collector's later passes (`gc.freeze`)."""
    state = ServerState(config=config or load_config(), token=token or None)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with runtime(state.config) as orc:
            await orc.ready()
            if own_process:
                _settle_heap()
            sync = ModelSync(orc, state.config.server.models_sync_s)
            await sync.start()
            state.runtime, state.models = orc, sync
            try:
                yield
            finally:
                state.runtime = state.models = None
                await sync.stop()

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", routes.list_models, methods=["GET"]),
            Route("/v1/models/{name:path}", routes.get_model, methods=["GET"]),
            Route("/v1/feedback", routes.feedback, methods=["POST"]),
            Route("/v1/history", routes.history, methods=["GET"]),
            Route("/v1/verdicts", routes.verdicts, methods=["POST"]),
            Route("/v1/spend", routes.spend, methods=["GET"]),
            Route("/health", routes.health, methods=["GET"]),
            Route("/status", routes.status, methods=["GET"]),
            Route("/metrics", routes.metrics, methods=["GET"]),
            Route("/admin/models", admin.list_models, methods=["GET"]),
            Route("/admin/models", admin.add_model, methods=["POST"]),
            Route("/admin/models/{name:path}", admin.update_model, methods=["PATCH"]),
            Route("/admin/models/{name:path}", admin.delete_model, methods=["DELETE"]),
            Route(dashboard.PAGE_PATH, dashboard.page, methods=["GET"]),
            Route("/dashboard/spend", dashboard.spend, methods=["GET"]),
            Route("/dashboard/models", dashboard.models, methods=["GET"]),
            Mount(dashboard.STATIC_PREFIX.rstrip("/"), dashboard.static_files(), name="static"),
        ],
        middleware=[  # outermost first: CORS also wraps the 500s CatchAll makes of a bug
            *_cors(state.config.server.cors_origins),
            Middleware(CatchAll),
            Middleware(TokenAuth, token=state.token),
        ],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.orchestra = state
    return app


# Response headers a page may read: a browser hides all but a few (content-type...) from a
# cross-origin page unless they are listed. The decision's, and those OpenAI's JavaScript SDK
# reads to back off (`retry-after`, `x-should-retry`) and to name a request (`x-request-id`).
EXPOSED_HEADERS = (
    "x-orchestra-request-id", "x-orchestra-tier", "x-orchestra-model", "x-request-id",
    "retry-after", "x-should-retry",
)  # fmt: skip


def _cors(origins: list[str]) -> list[Middleware]:
    """Cross-origin access for the configured origins, ahead of the token check: a browser's
    preflight carries no token. Any request header is allowed (OpenAI's SDKs send their own)."""
    if not origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["*"],
            expose_headers=EXPOSED_HEADERS,
        )
    ]


def _settle_heap() -> None:
    """Exempt what start-up built (LiteLLM's tables, the catalog, the modules) from the cyclic
    collector's later passes, which walked it all again: at 50 concurrent requests a worker
    served ~10 % more and its p99 fell from ~345 to ~200 ms (bench/serve.py). Only for a
    process that is the server's own: an object frozen here is never collected as a cycle."""
    gc.collect()
    gc.freeze()


def app_from_env() -> Starlette:
    """The app as `orchestra serve` runs it in each worker: the config from the usual lookup
    (`ORCHESTRA_CONFIG`, which the CLI sets), the token from `ORCHESTRA_TOKEN`."""
    return create_app(load_config(), token=os.environ.get(TOKEN_ENV), own_process=True)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 and 405, in OpenAI's error shape."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    error = ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                     code=code, headers=exc.headers)  # fmt: skip
    return error.response()


class CatchAll:
    """Whatever escapes a route becomes OpenAI's 500 (its traceback only in the redacted log),
    and stops there: nothing reaches the client or the server's error log unredacted."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            if scope["type"] != "http":
                raise
            error = api_error(exc)
            if not started:
                await error.response()(scope, receive, send)
