"""The CLI's connection to a running `orchestra serve`, found by a quick connect.

Plain `http.client`: importing it costs ~5 ms where httpx costs ~90 ms (measured on this 2-core
machine), and one command needs one keep-alive connection, JSON bodies and SSE lines, no more.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from orchestra.core.errors import ConfigError, OrchestraError, RequestError

URL_ENV = "ORCHESTRA_URL"
TOKEN_ENV = "ORCHESTRA_TOKEN"
OFF = frozenset({"off", "none", "no"})  # ORCHESTRA_URL=off: always in-process
PROBE_S = 0.25  # loopback answers (or refuses) in well under a millisecond
READ_S = 600.0  # an answer may be long; the server bounds it with its own deadlines

# The server's error codes, named as the in-process CLI names the same failure.
_NAMES = {
    "model_not_found": "UnknownModelError",
    "rejected_request": "RejectedRequest",
    "invalid_request": "RequestError",
    "model_not_allowed": "NoAllowedModelError",
    "no_model_available": "NoAllowedModelError",
    "all_candidates_failed": "AllCandidatesFailed",
    "insufficient_quota": "AllCandidatesFailed",
    "rate_limit_exceeded": "AllCandidatesFailed",
    "stream_broken": "StreamBroken",
    "not_recorded": "NotRecorded",
    "policy_error": "PolicyError",
    "store_error": "StoreError",
}


class ServerError(OrchestraError):
    """A failure the server reported: its message, its OpenAI error `code`, and the request's
    id and attempts when it had some (as `run --json` prints them)."""

    def __init__(
        self, message: str, *, code: str, request_id: str | None, attempts: list[Any]
    ) -> None:
        super().__init__(message)
        self.code = code
        self.shown_as = _NAMES.get(code, "ServerError")  # the CLI's name for it, as in-process
        self.kind = "stream_broken" if code == "stream_broken" else self.shown_as
        self.request_id = request_id or ""
        self.attempts = _attempts(attempts)


class ServerRequestError(ServerError, RequestError):
    """The server refused the request itself (400, 404): the user's to fix, as in-process."""


class Server:
    """One running server, on one keep-alive connection."""

    def __init__(self, url: str, sock: socket.socket, token: str | None) -> None:
        parts = urlsplit(url)
        self.url = url
        self._conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=READ_S)
        sock.settimeout(READ_S)
        self._conn.sock = sock  # the probe's connection carries the first request
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def get(self, path: str) -> Any:
        return self._json(self._send("GET", path, None))

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._json(self._send("POST", path, body))

    def events(self, path: str, body: dict[str, Any]) -> Iterator[tuple[str | None, Any]]:
        """POST `body`, then the server-sent events as they arrive: (event name, its data)."""
        response = self._send("POST", path, body)
        if response.status != 200:
            self._json(response)  # raises the server's error
        name: str | None = None
        while line := response.readline():
            text = line.decode("utf-8").rstrip("\r\n")
            if text.startswith("event:"):
                name = text[6:].strip()
            elif text.startswith("data:"):
                data = text[5:].strip()
                if data == "[DONE]":
                    break
                yield name, json.loads(data)
                name = None
        response.read()  # the rest, so the connection can be reused

    def close(self) -> None:
        self._conn.close()

    def _send(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        payload = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
        try:
            self._conn.request(method, path, body=payload, headers=self._headers)
            return self._conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            raise OrchestraError(f"the server at {self.url} failed: {exc}") from None

    def _json(self, response: Any) -> Any:
        data = response.read()
        status: int = response.status
        try:
            body = json.loads(data) if data else {}
        except ValueError:
            body = None
        if status == 200 and body is not None:
            return body
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            raise OrchestraError(
                f"{self.url} answered {status} {response.reason}, not as an Orchestra server "
                f"does (set {URL_ENV}=off to run in-process)"
            )
        message = str(error.get("message") or f"HTTP {status}")
        if status in (401, 403):
            raise ConfigError(f"the server at {self.url} refused: {message} (set {TOKEN_ENV})")
        info = error.get("orchestra")
        info = info if isinstance(info, dict) else {}
        kind = ServerRequestError if status in (400, 404) else ServerError
        raise kind(
            message,
            code=str(error.get("code")),
            request_id=info.get("request_id"),
            attempts=info.get("attempts") or [],
        )


def find_server(given: str | None, default_port: int) -> Server | None:
    """The server at `given` (`--server`), `$ORCHESTRA_URL` or 127.0.0.1:`default_port`, if one
    accepts a connection at once; None to run in-process. Only an address given with `--server`
    must answer (a clear error if not)."""
    url = given or os.environ.get(URL_ENV) or f"http://127.0.0.1:{default_port}"
    if url.strip().lower() in OFF:
        return None
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http" or not parts.hostname:
        raise ConfigError(f"server address {url!r}: expected http://HOST:PORT")
    try:
        sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=PROBE_S)
    except OSError as exc:
        if given:
            raise ConfigError(f"no server answers at {url}: {exc}") from None
        return None
    token = os.environ.get(TOKEN_ENV) or None
    return Server(f"http://{parts.netloc}", sock, token)


def _attempts(raw: list[Any]) -> list[Any]:
    if not raw:
        return []
    from orchestra.core.result import Attempt

    return [Attempt.model_validate(a) for a in raw if isinstance(a, dict)]
