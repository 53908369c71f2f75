"""OpenAI's error shape, and the one place that decides which status each failure becomes.

RequestError, RejectedRequest          400 invalid_request_error
UnknownModelError                      404 model_not_found (as OpenAI answers)
NoAllowedModelError                    422 model_not_allowed when the request forced a model,
                                       a tier or a need (changing the request helps);
                                       429 insufficient_quota when the cost agent alone vetoed
                                       every model (the budget is spent: as the guard says);
                                       503 no_model_available otherwise (the agents' view of
                                       this moment: offline, breakers; a retry may help)
StreamBroken (mid-stream)              an SSE `error` event, code stream_broken, then the end
AllCandidatesFailed                    502 all_candidates_failed, with the attempts; 429 when
                                       every attempt was refused by a budget or a rate
                                       limit; 503 when every model was skipped (breakers
                                       open: `Retry-After` is the first one's recovery left)
NotRecorded                            500 not_recorded (answered, but not on disk: never
                                       returned as a success), `x-should-retry: false`
PolicyError, StoreError, anything else 500, the message only (never a traceback)
"""

from __future__ import annotations

import logging
import math
import traceback
from collections.abc import Mapping
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse

from orchestra.agents.cost import CostAgent
from orchestra.core.errors import (
    AllCandidatesFailed,
    NoAllowedModelError,
    NotRecorded,
    OrchestraError,
    PolicyError,
    RejectedRequest,
    RequestError,
    StoreError,
    StreamBroken,
    UnknownModelError,
)
from orchestra.core.request import Request
from orchestra.core.result import Attempt

log = logging.getLogger("orchestra.server")

_BUDGET_KINDS = frozenset({"budget"})
_BUDGET_AGENTS = frozenset({CostAgent.name})
_LIMIT_KINDS = frozenset({"rate_limit", "budget"})
# OpenAI's SDKs retry a 5xx (twice by default) unless the answer says not to. An unrecorded
# answer was paid for: each retry would pay the provider again, with the store still failing to
# record it (or its ledger rows), so the spend would grow unseen by the budget.
_NO_RETRY = {"x-should-retry": "false"}


class ApiError(Exception):
    """A failure as the client sees it: a status and OpenAI's `{"error": {...}}` body.

    `code` is also the `status` label of the request metrics. `extra` goes into the error
    object beside OpenAI's four fields (Orchestra's `request_id` and `attempts`)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def body(self) -> dict[str, Any]:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return {"error": {**error, **self.extra}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, param: str | None = None, code: str = "invalid_request") -> ApiError:
    return ApiError(400, message, code=code, param=param)


def api_error(exc: BaseException, request: Request | None = None) -> ApiError:
    """The client's view of `exc`, raised while answering `request`."""
    if isinstance(exc, ApiError):
        return exc
    rid = request.id if request is not None else None
    error = _mapped(exc, request, {"orchestra": {"request_id": rid}} if rid else {})
    if rid:
        error.headers |= request_id_headers(rid)
    return error


def request_id_headers(request_id: str) -> dict[str, str]:
    """The request's id, under Orchestra's name and OpenAI's: the SDKs read `x-request-id`
    into `_request_id` and `APIStatusError.request_id`, which apps log for lookups (here:
    `/v1/history`, `/v1/feedback`)."""
    return {"x-orchestra-request-id": request_id, "x-request-id": request_id}


def _mapped(exc: BaseException, request: Request | None, extra: dict[str, Any]) -> ApiError:
    rid = request.id if request is not None else None
    if isinstance(exc, UnknownModelError):
        return ApiError(404, str(exc), code="model_not_found", param="model", extra=extra)
    if isinstance(exc, RejectedRequest):
        extra = _with_attempts(extra, exc.attempts)
        return ApiError(400, str(exc), code="rejected_request", param="messages", extra=extra)
    if isinstance(exc, RequestError):
        return ApiError(400, str(exc), code="invalid_request", extra=extra)
    if isinstance(exc, NoAllowedModelError):
        if request is not None and _forces(request):
            return ApiError(422, str(exc), code="model_not_allowed", param="model", extra=extra)
        if exc.by and exc.by <= _BUDGET_AGENTS:
            return _over_budget(str(exc), {}, extra)
        return ApiError(503, str(exc), type="server_error", code="no_model_available", extra=extra)
    if isinstance(exc, AllCandidatesFailed):
        return _all_failed(exc, _with_attempts(extra, exc.attempts))
    if isinstance(exc, StreamBroken):
        extra = _with_attempts(extra, exc.attempts)
        return ApiError(502, str(exc), type="server_error", code="stream_broken", extra=extra)
    if isinstance(exc, NotRecorded):
        message = f"the answer was produced but could not be recorded, so it is withheld: {exc}"
        return ApiError(
            500, message, type="server_error", code="not_recorded", headers=_NO_RETRY,
            extra=extra,
        )  # fmt: skip
    if isinstance(exc, PolicyError | StoreError):
        code = "policy_error" if isinstance(exc, PolicyError) else "store_error"
        return ApiError(500, str(exc), type="server_error", code=code, extra=extra)
    if isinstance(exc, OrchestraError):
        return ApiError(500, str(exc), type="server_error", code="orchestra_error", extra=extra)
    if isinstance(exc, ClientDisconnect):  # nobody to answer; nginx's 499 for the metrics
        return ApiError(499, "the client closed the connection", code="cancelled", extra=extra)
    # A bug: its traceback goes to the log, never to the client; in the message, not as
    # exc_info, so that the log's redacting filter masks it too.
    trace = "".join(traceback.format_exception(exc)).rstrip()
    log.error("internal error answering %s:\n%s", rid or "a request", trace)
    return ApiError(
        500, f"internal error ({type(exc).__name__})", type="server_error", code="internal_error",
        extra=extra,
    )  # fmt: skip


def _forces(request: Request) -> bool:
    """Whether the request itself narrowed the choice (so changing it may help)."""
    return bool(
        request.model or request.tier or request.capabilities or request.min_context
        or request.latency_ms
    )  # fmt: skip


def _all_failed(exc: AllCandidatesFailed, extra: dict[str, Any]) -> ApiError:
    tried = [a for a in exc.attempts if not a.skipped]
    kinds = {a.error_kind for a in tried}
    if tried and kinds <= _LIMIT_KINDS:
        # Refused before any provider was called: the client should slow down (or wait for the
        # budget), which is what 429 tells OpenAI's SDKs.
        waits = [a.retry_after_s for a in tried if a.retry_after_s is not None]
        headers = {"retry-after": str(max(1, round(min(waits))))} if waits else {}
        if kinds <= _BUDGET_KINDS:
            return _over_budget(str(exc), headers, extra)
        return ApiError(
            429, str(exc), type="rate_limit_error", code="rate_limit_exceeded", headers=headers,
            extra=extra,
        )  # fmt: skip
    if exc.attempts and not tried:  # every model skipped: breakers open, windows too small
        # When the first breaker lets a trial call through: what OpenAI's SDKs wait before
        # their retry (else ~1 s, into the same open breakers).
        waits = [a.retry_after_s for a in exc.attempts if a.retry_after_s]
        headers = {"retry-after": str(max(1, math.ceil(min(waits))))} if waits else {}
        return ApiError(
            503, str(exc), type="server_error", code="no_model_available", headers=headers,
            extra=extra,
        )  # fmt: skip
    return ApiError(502, str(exc), type="server_error", code="all_candidates_failed", extra=extra)


def _over_budget(message: str, headers: dict[str, str], extra: dict[str, Any]) -> ApiError:
    """The budget refused the request: OpenAI's answer to a spent quota (its type and code)."""
    return ApiError(
        429, message, type="insufficient_quota", code="insufficient_quota", headers=headers,
        extra=extra,
    )  # fmt: skip


def _with_attempts(extra: dict[str, Any], attempts: tuple[Attempt, ...]) -> dict[str, Any]:
    info = dict(extra.get("orchestra", {}))
    info["attempts"] = [a.model_dump(mode="json") for a in attempts]
    return {**extra, "orchestra": info}
