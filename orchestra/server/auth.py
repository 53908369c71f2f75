"""The bearer token: with one set, every route but `/health` and the dashboard's page and static
files (which hold no data) needs it; admin routes always do.

The comparison is `hmac.compare_digest` on bytes, so how long a wrong token takes to refuse says
nothing of how much of it was right.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from orchestra.server.errors import ApiError

OPEN_PATHS = frozenset({"/health", "/"})
OPEN_PREFIX = "/static/"
ADMIN_PREFIX = "/admin/"


def token_matches(given: bytes | None, token: bytes) -> bool:
    """Whether an `Authorization` header value carries `token` (constant time)."""
    if given is None:
        return False
    scheme, _, value = given.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    return hmac.compare_digest(value.strip(), token)


class TokenAuth:
    """ASGI middleware: refuses a request without the token (401), and any admin request when
    no token is configured (403: an admin route open to anyone on the network is never right)."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in OPEN_PATHS or path.startswith(OPEN_PREFIX):
            await self.app(scope, receive, send)
            return
        admin = path.startswith(ADMIN_PREFIX) or path == ADMIN_PREFIX[:-1]
        if self.token is None and admin:
            await _refuse(403, scope, receive, send)
            return
        if self.token is not None and not token_matches(_authorization(scope), self.token):
            await _refuse(401, scope, receive, send)
            return
        await self.app(scope, receive, send)


def _authorization(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return bytes(value)
    return None


async def _refuse(status: int, scope: Scope, receive: Receive, send: Send) -> None:
    if status == 401:
        error = ApiError(
            401, "a valid bearer token is required (Authorization: Bearer <token>)",
            code="invalid_api_key", headers={"www-authenticate": "Bearer"},
        )  # fmt: skip
    else:
        error = ApiError(
            403, "admin routes need a token: start the server with --token or ORCHESTRA_TOKEN",
            type="permission_error", code="admin_disabled",
        )  # fmt: skip
    await error.response()(scope, receive, send)
