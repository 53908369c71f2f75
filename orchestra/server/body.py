"""Reading a request's JSON body, never more than the configured limit of it."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from orchestra.server.errors import ApiError, bad_request


def too_large(limit: int) -> ApiError:
    return ApiError(
        413, f"the request body is larger than this server accepts ({limit} bytes)",
        code="request_too_large",
    )  # fmt: skip


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object; 413 past `limit` bytes (declared or sent), 400 if it is not
    a JSON object. A chunked body is counted as it arrives, so it is never held past the limit."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise too_large(limit)
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad_request(f"the body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:  # a few kilobytes of `[[[[...` exhaust the parser's stack
        raise bad_request("the body's JSON is nested too deeply", code="invalid_json") from None
    if not isinstance(value, dict):
        raise bad_request("the body must be a JSON object", code="invalid_json")
    return value
