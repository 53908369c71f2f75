"""Every error Orchestra raises, in one place.

    OrchestraError
     ├── ConfigError              the config file or a value in it is wrong
     ├── RequestError             a request is malformed
     │    ├── UnknownModelError   a request (or --model) names a model not in the catalog
     │    └── RejectedRequest     the client refused to send it (e.g. it cannot be encoded)
     ├── PolicyError              a policy is unknown, raised, or returned an invalid decision
     ├── NoAllowedModelError      agents' constraints left no model to try (says which agent)
     ├── EmbeddedModelError       the embedded local model is missing or would not start
     ├── StoreError               a read or a write to the store failed
     │    ├── StoreUnavailable    the store cannot be opened: no such place, not a database,
     │    │                       or a schema newer than this Orchestra
     │    └── NotRecorded         an answer came, but its record could not be written
     ├── ProviderError            one call to one model failed (or would overrun the budget);
     │                            `kind` says how
     └── AllCandidatesFailed      every candidate failed; `attempts` holds each failure

Provider failures are mapped to `ProviderError` kinds by the backends only
(`orchestra.execution.litellm_backend` from LiteLLM's exceptions, `embedded_backend` from HTTP),
both by HTTP status first through `status_kind`; nothing above a backend sees a client's types.
"""

from __future__ import annotations

from asyncio import CancelledError
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from orchestra.core.result import Attempt, Result, Usage

ProviderErrorKind = Literal[
    "timeout",
    "connection",
    "rate_limit",
    "server",
    "auth",
    "bad_request",
    "not_found",
    "context_window",
    "stream_broken",
    "unavailable",
    "budget",
    "invalid_request",
    "unknown",
]

RateLimitReason = Literal["limited", "queue_full", "deadline", "too_large"]

# What an HTTP status says about a failed call; other 5xx are "server" (see `status_kind`).
_STATUS_KINDS: dict[int, ProviderErrorKind] = {
    400: "bad_request",
    401: "auth",
    403: "auth",
    404: "not_found",
    408: "timeout",
    409: "server",
    413: "context_window",
    422: "bad_request",
    429: "rate_limit",
}


def status_kind(status: int) -> ProviderErrorKind | None:
    """The kind of failure an HTTP status means, or None when the status alone does not say."""
    kind = _STATUS_KINDS.get(status)
    if kind is None and status >= 500:
        return "server"
    return kind


# Worth trying the same model again. A timeout is not: the attempt used its share of the
# deadline, and the next candidate is the better use of what is left.
RETRYABLE_KINDS: frozenset[str] = frozenset({"connection", "rate_limit", "server", "stream_broken"})


class OrchestraError(Exception):
    """Base of every error Orchestra raises.

    `request_id`: when the error ends a request that was recorded, the id its record got (as
    `orchestra history` shows it, for `orchestra feedback`); "" for an error about no request.
    """

    request_id: str = ""


def is_cancellation(exc: BaseException) -> bool:
    """`exc` ends a call because its caller went away (a task cancelled, a stream closed early,
    Ctrl-C), not because something failed."""
    return isinstance(exc, CancelledError | GeneratorExit | KeyboardInterrupt)


class ConfigError(OrchestraError):
    """The configuration is invalid; the message names the file and the field."""


class RequestError(OrchestraError):
    """A request is malformed."""


class UnknownModelError(RequestError):
    """A model name that the catalog does not hold."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        listing = ", ".join(known) or "none"
        super().__init__(f"unknown model {name!r}; the catalog has: {listing}")
        self.name = name


class RejectedRequest(RequestError):
    """The request failed before any byte was sent (it cannot be encoded, the client refused
    it): the request's fault, so no retry, no failover, and no provider is blamed."""

    def __init__(self, message: str, attempts: Sequence[Attempt], request_id: str = "") -> None:
        super().__init__(message)
        self.attempts = tuple(attempts)
        self.request_id = request_id


class PolicyError(OrchestraError):
    """A policy is unknown, raised, or returned an invalid decision."""


class NoAllowedModelError(OrchestraError):
    """The agents' hard constraints (or the caller's hints) left no model to try.

    `by` names the agents whose vetoes removed the models, when they are known (the cost agent
    alone: the budget is what refuses the request)."""

    def __init__(self, message: str, *, by: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.by = frozenset(by)


class EmbeddedModelError(OrchestraError):
    """The embedded local model is not installed or failed to start."""


class StoreError(OrchestraError):
    """The store failed: it cannot be opened, read or written."""


class StoreUnavailable(StoreError):
    """The store cannot be opened or migrated: its place cannot be written, the file is not a
    database, or its schema is newer than this Orchestra. The environment is at fault (the CLI
    exits 2), not a request."""


class NotRecorded(StoreError):
    """The answer came (and may have been paid for) but its record could not be written; the
    answer is in `result`, so a caller can still use it."""

    def __init__(self, message: str, result: Result) -> None:
        super().__init__(message)
        self.result = result


class ProviderError(OrchestraError):
    """One call to one model failed.

    `kind` classifies the failure (by HTTP status where there is one); `retryable` says whether
    the same model may succeed if tried again. `billed` is the usage the provider reported for
    a call that failed all the same (an empty answer): it was paid for, so it is charged.
    `sent`: the request reached the provider, which may bill it, but no answer (nor any usage)
    came back: a body cut off, a read that timed out. Such a call is charged at its reservation
    (the worst case), as a dead process's is; one that never left, or that the provider refused
    with an error status, is not.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: ProviderErrorKind,
        model: str = "",
        status_code: int | None = None,
        retry_after_s: float | None = None,
        billed: Usage | None = None,
        sent: bool = False,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.model = model
        self.status_code = status_code
        self.retry_after_s = retry_after_s
        self.billed = billed
        self.sent = sent

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS


class AllCandidatesFailed(OrchestraError):
    """Every candidate in the decision failed; `attempts` lists what happened to each."""

    def __init__(self, message: str, attempts: Sequence[Attempt], request_id: str = "") -> None:
        super().__init__(message)
        self.attempts = tuple(attempts)
        self.request_id = request_id


class RateLimitedError(ProviderError):
    """Orchestra's own limiter refused a call; `reason` says why, `retry_after_s` when it may fit.

    Not retryable on the same model: the limiter has already waited as long as it may (or was
    told not to), so an immediate retry would only be refused again; the executor moves on. It
    never counts against the model's circuit breaker: the provider did nothing wrong.
    """

    def __init__(
        self, message: str, *, model: str, reason: RateLimitReason, retry_after_s: float | None
    ) -> None:
        super().__init__(message, kind="rate_limit", model=model, retry_after_s=retry_after_s)
        self.reason = reason

    @property
    def retryable(self) -> bool:
        return False


class StreamBroken(ProviderError):
    """A stream failed after text had reached the caller: no failover is possible then.

    `partial` is the text received; `attempts` every attempt of the request.
    """

    def __init__(self, cause: ProviderError, partial: str, attempts: Sequence[Attempt]) -> None:
        super().__init__(
            f"the stream from {cause.model} broke after {len(partial)} characters: {cause}",
            kind="stream_broken",
            model=cause.model,
            status_code=cause.status_code,
        )
        self.partial = partial
        self.attempts = tuple(attempts)
