"""The executor: walks a decision's candidates through the backend until one answers."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from orchestra.backend import Backend, CallParams, Completion, StreamPiece
from orchestra.budget_guard import BudgetGuard, Hold
from orchestra.catalog import Catalog
from orchestra.decision import Decision
from orchestra.endpoints import Endpoints
from orchestra.errors import AllCandidatesFailed, ProviderError
from orchestra.model_spec import ModelSpec
from orchestra.request import Request
from orchestra.result import Attempt, Usage


@dataclass(frozen=True, kw_only=True)
class Answer:
    """What the executor hands back: the answering model, its completion, and every attempt."""

    spec: ModelSpec
    completion: Completion
    attempts: tuple[Attempt, ...]


class StreamBroken(ProviderError):
    """A stream failed after text had reached the caller: no failover is possible then."""

    def __init__(self, cause: ProviderError, partial: str, attempts: tuple[Attempt, ...]) -> None:
        super().__init__(
            f"the stream from {cause.model} broke after {len(partial)} characters: {cause}",
            kind="stream_broken",
            model=cause.model,
            status_code=cause.status_code,
        )
        self.partial = partial
        self.attempts = attempts


class Executor:
    """Tries each candidate in order; a failure moves on to the next one.

    Every attempt is recorded with its outcome. Streaming fails over transparently until the first
    piece of text has been yielded; after that a failure ends the stream with `StreamBroken`.
    """

    def __init__(
        self,
        backend: Backend,
        catalog: Catalog,
        endpoints: Endpoints,
        redact: Callable[[str], str] = lambda s: s,
        guard: BudgetGuard | None = None,
    ) -> None:
        self.backend = backend
        self.catalog = catalog
        self.endpoints = endpoints
        self.redact = redact
        self.guard = guard

    async def complete(self, request: Request, decision: Decision) -> Answer:
        attempts: list[Attempt] = []
        for candidate in decision.candidates:
            spec = self.catalog.get(candidate.model)
            started = time.perf_counter()
            hold = None
            try:
                hold = self._hold(spec, request)
                endpoint = await self.endpoints.resolve(spec)
                completion = await self.backend.complete(
                    spec, endpoint, request.messages, self._params(spec, request)
                )
            except ProviderError as exc:
                attempts.append(self._failed(spec, exc, started))
                continue
            finally:
                self._release(hold)
            attempts.append(_succeeded(spec, started))
            return Answer(spec=spec, completion=completion, attempts=tuple(attempts))
        raise self._all_failed(request, attempts)

    async def stream(
        self, request: Request, decision: Decision
    ) -> AsyncIterator[StreamPiece | Answer]:
        """Yield text pieces, then one final `Answer` (whose completion holds the whole text)."""
        attempts: list[Attempt] = []
        for candidate in decision.candidates:
            spec = self.catalog.get(candidate.model)
            started = time.perf_counter()
            parts: list[str] = []
            usage: Usage | None = None
            hold = None
            try:
                hold = self._hold(spec, request)
                endpoint = await self.endpoints.resolve(spec)
                params = self._params(spec, request)
                async for piece in self.backend.stream(spec, endpoint, request.messages, params):
                    if piece.usage is not None:
                        usage = piece.usage
                    if piece.text:
                        parts.append(piece.text)
                        yield piece
            except ProviderError as exc:
                attempts.append(self._failed(spec, exc, started))
                if parts:
                    raise StreamBroken(exc, "".join(parts), tuple(attempts)) from exc
                continue
            finally:
                self._release(hold)
            attempts.append(_succeeded(spec, started))
            completion = Completion(text="".join(parts), usage=usage or Usage())
            yield Answer(spec=spec, completion=completion, attempts=tuple(attempts))
            return
        raise self._all_failed(request, attempts)

    def _hold(self, spec: ModelSpec, request: Request) -> Hold | None:
        return self.guard.hold(spec, request) if self.guard is not None else None

    def _release(self, hold: Hold | None) -> None:
        if self.guard is not None:
            self.guard.release(hold)

    def _params(self, spec: ModelSpec, request: Request) -> CallParams:
        timeout = min(spec.timeout_s, request.timeout_s) if request.timeout_s else spec.timeout_s
        return CallParams(
            timeout_s=timeout, max_tokens=request.max_tokens, temperature=request.temperature
        )

    def _failed(self, spec: ModelSpec, exc: ProviderError, started: float) -> Attempt:
        return Attempt(
            model=spec.name,
            tier=spec.tier,
            ok=False,
            latency_ms=(time.perf_counter() - started) * 1000,
            error_kind=exc.kind,
            error=self.redact(str(exc))[:500],
            status_code=exc.status_code,
        )

    def _all_failed(self, request: Request, attempts: list[Attempt]) -> AllCandidatesFailed:
        detail = "; ".join(f"{a.model}: {a.error_kind} ({a.error})" for a in attempts)
        return AllCandidatesFailed(
            f"every candidate failed: {detail}", attempts, request_id=request.id
        )


def _succeeded(spec: ModelSpec, started: float) -> Attempt:
    return Attempt(
        model=spec.name,
        tier=spec.tier,
        ok=True,
        latency_ms=(time.perf_counter() - started) * 1000,
    )
