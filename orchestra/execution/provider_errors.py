"""A failed call to a provider, classified: what failed, whether the provider saw the request.

Shared by the backends that go through the OpenAI SDK (directly, or inside LiteLLM): the
exceptions are told apart by class name along their chain of causes, so this module imports
neither library.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import math
from collections.abc import Iterator

from orchestra.core.errors import ProviderError, ProviderErrorKind, status_kind
from orchestra.core.model_spec import ModelSpec


def provider_error(exc: BaseException, spec: ModelSpec, *, started: bool = False) -> ProviderError:
    """Map any exception from a call (through LiteLLM or the OpenAI SDK) to a `ProviderError`,
    by HTTP status first."""
    if isinstance(exc, ProviderError):
        return exc
    if _never_sent(exc):
        return ProviderError(
            f"{spec.name}: the request could not be sent: {type(exc).__name__}: {_first_line(exc)}",
            kind="invalid_request",
            model=spec.name,
        )
    status = _status(exc)
    kind = _kind(exc, status)
    if started and kind != "timeout":
        kind = "stream_broken"
    message = f"{spec.name}: {type(exc).__name__}: {_first_line(exc)}"
    return ProviderError(
        message,
        kind=kind,
        model=spec.name,
        status_code=status,
        retry_after_s=_retry_after(exc),
        sent=not _not_connected(exc) and (status in _GAVE_UP_WAITING or not _refused(exc)),
    )


# Error statuses of a gateway that passed the request on, then stopped waiting for the answer
# (504 Gateway Timeout; Cloudflare's 524, "a timeout occurred" after reaching the origin): the
# provider behind it had the request, and may bill it, as for a read that timed out.
_GAVE_UP_WAITING = frozenset((504, 524))


# Failures to connect (no request reached the provider), by class name along the cause chain:
# httpx's, aiohttp's (which LiteLLM's transport wraps in httpx's), the socket's own.
_CONNECT_FAILURES = frozenset((
    "ConnectError", "ConnectTimeout", "ClientConnectorError", "ClientConnectorCertificateError",
    "ClientConnectorSSLError", "ClientConnectorDNSError", "ClientProxyConnectionError",
    "ConnectionTimeoutError", "ProxyError", "ConnectionRefusedError", "gaierror",
))  # fmt: skip


# LiteLLM's errors that come only from an error status: the provider refused, billing nothing.
# (Its InternalServerError and Timeout also stand for a connection or read that failed: those
# are told apart by what caused them.)
_REFUSALS = frozenset((
    "RateLimitError", "AuthenticationError", "PermissionDeniedError", "NotFoundError",
    "BadRequestError", "UnprocessableEntityError", "ContextWindowExceededError",
    "ContentPolicyViolationError", "ServiceUnavailableError", "BadGatewayError",
))  # fmt: skip


# The connection failed after it was made (cut, reset, garbled): httpx's errors. DecodingError:
# a body its Content-Encoding cannot undo (the SDK wraps it as a connection error in a whole
# answer, and leaves it bare in a stream).
_TRANSPORT_FAILURES = frozenset(
    ("RemoteProtocolError", "ReadError", "WriteError", "CloseError", "DecodingError")
)


def _not_connected(exc: BaseException) -> bool:
    """The call failed while connecting: the provider never saw the request."""
    if (aiohttp := _aiohttp_cause(exc)) is not None:
        return type(aiohttp).__name__ in _CONNECT_FAILURES
    return any(type(cause).__name__ in _CONNECT_FAILURES for cause in _causes(exc))


def _aiohttp_cause(exc: BaseException) -> BaseException | None:
    """aiohttp's own error along the causes, when aiohttp carried the call. It is the one to
    believe: the httpx errors it is translated into can be wrong (httpx-aiohttp makes a refused
    connection, and a server that hung up, an httpx `ConnectTimeout`)."""
    for cause in _causes(exc):
        if type(cause).__module__.startswith("aiohttp"):
            return cause
    return None


def _refused(exc: BaseException) -> bool:
    """The provider answered with an error status (LiteLLM's own errors carry a status even for
    a connection that failed: the HTTP client's error, or the OpenAI SDK's, tells)."""
    return _answered_with_status(exc) or type(exc).__name__ in _REFUSALS


def _answered_with_status(exc: BaseException) -> bool:
    """The HTTP client's error, or the OpenAI SDK's, along the causes carries the status the
    provider answered with (not one LiteLLM made up)."""
    for cause in _causes(exc):
        kind = type(cause)
        if kind.__name__ == "HTTPStatusError":
            return True
        if not kind.__module__.startswith("litellm") and isinstance(
            getattr(cause, "status_code", None), int
        ):
            return True
    return False


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what caused it, and so on."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        yield cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__


def _kind(exc: BaseException, status: int | None) -> ProviderErrorKind:
    name = type(exc).__name__
    text = str(exc).lower()
    if name == "ContextWindowExceededError" or "context length" in text or "context window" in text:
        return "context_window"
    if (aiohttp := _aiohttp_cause(exc)) is not None and status is None:
        return "timeout" if isinstance(aiohttp, TimeoutError) else "connection"
    if isinstance(exc, asyncio.TimeoutError | TimeoutError) or "timeout" in name.lower():
        return "timeout"
    if name == "APIConnectionError" or "connection error" in text or "connection refused" in text:
        return "connection"
    if status is not None and (by_status := status_kind(status)) is not None:
        return by_status
    if any(type(cause).__name__ in _TRANSPORT_FAILURES for cause in _causes(exc)):
        return "connection"  # the HTTP client's own, raised bare while a stream is read
    by_name: dict[str, ProviderErrorKind] = {
        "RateLimitError": "rate_limit",
        "AuthenticationError": "auth",
        "PermissionDeniedError": "auth",
        "NotFoundError": "not_found",
        "BadRequestError": "bad_request",
        "UnprocessableEntityError": "bad_request",
        "InternalServerError": "server",
        "ServiceUnavailableError": "server",
        "APIError": "server",
        "JSONDecodeError": "server",
        "UnicodeDecodeError": "server",  # an answer that is not UTF-8: as one not JSON
        "MidStreamFallbackError": "stream_broken",
    }
    return by_name.get(name, "unknown")


def _never_sent(exc: BaseException) -> bool:
    """The client failed before any byte left: the text could not be encoded (a lone surrogate,
    say). The request's fault: no provider is to blame. (Not an answer that could not be
    decoded, a `UnicodeDecodeError`: that provider answered, and may have billed.)"""
    if any(isinstance(cause, UnicodeEncodeError) for cause in _causes(exc)):
        return True
    if _answered_with_status(exc):  # the words are the provider's (a Python server's own bug)
        return False
    return "codec can't encode" in str(exc) or "surrogates not allowed" in str(exc)


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and status >= 100:
        return status
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) and status >= 100 else None


def _retry_after(exc: BaseException) -> float | None:
    """The wait the provider asked for: `retry-after-ms` (OpenAI's, Azure's), else
    `retry-after` in seconds or as an HTTP date (RFC 9110), which was read as none."""
    for headers in (
        getattr(exc, "litellm_response_headers", None),
        getattr(getattr(exc, "response", None), "headers", None),
    ):
        if not headers:
            continue
        millis = _seconds(headers.get("retry-after-ms"))
        if millis is not None:
            return millis / 1000
        value = headers.get("retry-after")
        seconds = _seconds(value)
        if seconds is None and isinstance(value, str):
            seconds = _until(value)
        if seconds is not None:
            return seconds
    return None


def _seconds(value: object) -> float | None:
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _until(date: str) -> float | None:
    """Seconds from now until an HTTP date, or None if `date` is not one."""
    try:
        when = email.utils.parsedate_to_datetime(date)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, (when - datetime.datetime.now(datetime.UTC)).total_seconds())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else "")[:300]
