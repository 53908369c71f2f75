"""The executor: walks a decision's candidates through the backend until one answers.

Per candidate: skip it if its breaker is open (or its window is too small after a context-window
error), reserve budget, wait for its rate limit, call it with the time left in the request's
deadline, and on a retryable failure retry it with backoff (honouring Retry-After) while the
deadline allows; then move on. Every attempt, skip and cache hit is recorded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing
from dataclasses import dataclass, field
from types import TracebackType

from orchestra.core.catalog import Catalog
from orchestra.core.decision import Decision
from orchestra.core.errors import AllCandidatesFailed, ProviderError, RateLimitedError, StreamBroken
from orchestra.core.model_spec import ModelSpec
from orchestra.core.request import Request
from orchestra.core.result import Attempt, Result, Usage
from orchestra.core.tier import Tier
from orchestra.execution.backend import Backend, CallParams, Completion, Endpoint, StreamPiece
from orchestra.execution.cache import cache_key
from orchestra.execution.endpoints import Endpoints
from orchestra.execution.flight import Flight
from orchestra.execution.retry import Deadline
from orchestra.execution.safeguards import Safeguards
from orchestra.spend.estimate import prompt_tokens
from orchestra.spend.guard import Hold

# Failures that say something about the provider's health (not the caller's request or our own
# budget and limits) count against its circuit breaker.
BREAKER_KINDS = frozenset(
    {"timeout", "connection", "server", "rate_limit", "stream_broken", "auth", "unknown"}
)


@dataclass
class _Walk:
    """One request's walk down its candidates: the attempts so far and what they taught."""

    flight: Flight
    deadline: Deadline
    attempts: list[Attempt] = field(default_factory=list)
    overflowed_window: int | None = None

    @property
    def request(self) -> Request:
        return self.flight.request


class Executor:
    """Tries each candidate in order under the `Safeguards`; a failure moves on to the next.

    Streaming fails over transparently until the first piece of text has been yielded; after that
    a failure ends the stream with `StreamBroken`.
    """

    def __init__(
        self,
        backend: Backend,
        catalog: Catalog,
        endpoints: Endpoints,
        redact: Callable[[str], str] = lambda s: s,
        safeguards: Safeguards | None = None,
    ) -> None:
        self.backend = backend
        self.catalog = catalog
        self.endpoints = endpoints
        self.redact = redact
        self.safeguards = safeguards or Safeguards()

    async def complete(self, flight: Flight) -> Result:
        """Answer `flight` (whose decision is taken) with the first candidate that succeeds."""
        walk = self._walk(flight)
        if (hit := await self._cached(walk)) is not None:
            return hit
        async with aclosing(self._tries(walk)) as tries:
            async for t in tries:
                async with t:
                    endpoint, params = await t.admit()
                    call = self.backend.complete(t.spec, endpoint, walk.request.messages, params)
                    completion = await self._bounded(walk, call)
                if not t.failed:
                    return self._succeeded(walk, t, completion)
        raise self._all_failed(walk)

    async def stream(self, flight: Flight) -> AsyncIterator[StreamPiece | Result]:
        """Yield text pieces, then one final `Result` holding the whole text."""
        walk = self._walk(flight)
        if (hit := await self._cached(walk)) is not None:
            yield StreamPiece(text=hit.text)
            yield hit
            return
        async with aclosing(self._tries(walk)) as tries:
            async for t in tries:
                parts: list[str] = []
                usage: Usage | None = None
                async with t:
                    endpoint, params = await t.admit()
                    pieces = self.backend.stream(t.spec, endpoint, walk.request.messages, params)
                    async for piece in pieces:
                        usage = piece.usage or usage
                        if piece.text:
                            parts.append(piece.text)
                            t.partial = parts
                            yield piece
                if not t.failed:
                    completion = Completion(text="".join(parts), usage=usage or Usage())
                    yield self._succeeded(walk, t, completion)
                    return
        raise self._all_failed(walk)

    # -- the walk ----------------------------------------------------------------------------------

    def _walk(self, flight: Flight) -> _Walk:
        return _Walk(flight, Deadline(flight.request.timeout_s or self.safeguards.deadline_s))

    async def _tries(self, walk: _Walk) -> AsyncGenerator[_Try, None]:
        """Each attempt to make, in order: every candidate, retried while its failures allow."""
        for spec in self._candidates(walk):
            retry = 0
            while not walk.deadline.expired:
                t = _Try(self, walk, spec, retry)
                yield t
                if not t.failed or t.wait is None:
                    break
                retry += 1
                await asyncio.sleep(t.wait)

    def _candidates(self, walk: _Walk) -> Iterator[ModelSpec]:
        """The decision's models, each tier ordered by the balancer, minus those to skip."""
        assert walk.flight.decision is not None
        for spec in self._balanced(walk.flight.decision):
            if walk.overflowed_window is not None and spec.context_window <= walk.overflowed_window:
                self._skipped(
                    walk, spec, "context_window", f"window {spec.context_window} too small"
                )
                continue
            breaker = self.safeguards.breakers.get(spec.name) if self.safeguards.breakers else None
            if breaker is not None and not breaker.allow():
                self._skipped(walk, spec, "breaker_open", breaker.why_not())
                continue
            yield spec

    async def _admit(self, walk: _Walk, spec: ModelSpec) -> Hold | None:
        """Reserve budget and pass the model's rate limit (both may refuse: a ProviderError)."""
        hold = self.safeguards.guard.hold(spec, walk.request) if self.safeguards.guard else None
        limiter = self.safeguards.limiters.get(spec.name)
        if limiter is not None:
            try:
                await limiter.acquire(
                    _booked_tokens(walk.request),
                    priority=walk.request.priority,
                    deadline_s=walk.deadline.remaining(),
                )
            except BaseException:
                self._release(hold)
                raise
        return hold

    async def _bounded(self, walk: _Walk, call: Awaitable[Completion]) -> Completion:
        # The backend has its own timeout; this is the net under it, so no call outlives the
        # request's deadline even if a transport ignores its timeout.
        try:
            async with asyncio.timeout(walk.deadline.remaining() + 1.0):
                return await call
        except TimeoutError:
            raise ProviderError("the request's deadline passed", kind="timeout") from None

    def _params(self, walk: _Walk, spec: ModelSpec) -> CallParams:
        return CallParams(
            timeout_s=max(0.001, walk.deadline.attempt_timeout(spec.timeout_s)),
            max_tokens=walk.request.max_tokens,
            temperature=walk.request.temperature,
        )

    def _balanced(self, decision: Decision) -> list[ModelSpec]:
        specs = [self.catalog.get(c.model) for c in decision.candidates]
        balancer = self.safeguards.balancer
        if balancer is not None:
            ordered: list[ModelSpec] = []
            for tier in dict.fromkeys(s.tier for s in specs):  # tiers in the decision's order
                ordered += balancer.order(tier, [s for s in specs if s.tier is tier])
            specs = ordered
        health = self.safeguards.health
        if health is None:
            return specs
        # A model the health checks found down goes last rather than out: a check can be stale.
        return sorted(specs, key=lambda s: health.status(s.name).healthy is False)

    # -- outcomes ----------------------------------------------------------------------------------

    async def _cached(self, walk: _Walk) -> Result | None:
        decision = walk.flight.decision
        cache = self.safeguards.cache
        if cache is None or decision is None or not decision.candidates:
            return None
        first: Tier = decision.candidates[0].tier
        hit = await cache.get(_key(walk.request, first))
        if hit is None or hit.model not in self.catalog:
            return None
        spec = self.catalog.get(hit.model)
        walk.attempts.append(
            Attempt(model=spec.name, tier=spec.tier, ok=True, latency_ms=0.0, cached=True)
        )
        usage = Usage(prompt_tokens=hit.prompt_tokens, completion_tokens=hit.completion_tokens)
        return self._result(walk, spec, Completion(text=hit.text, usage=usage))  # costs nothing

    def _succeeded(self, walk: _Walk, t: _Try, completion: Completion) -> Result:
        spec = t.spec
        ms = (time.perf_counter() - t.started) * 1000
        walk.attempts.append(Attempt(model=spec.name, tier=spec.tier, ok=True, latency_ms=ms))
        if self.safeguards.breakers is not None:
            self.safeguards.breakers.get(spec.name).record_success()
        if self.safeguards.latency is not None:
            self.safeguards.latency.observe(spec.name, ms)
        u = completion.usage
        used = u.prompt_tokens + u.completion_tokens
        limiter = self.safeguards.limiters.get(spec.name)
        if limiter is not None and used > 0:  # the real usage replaces the booked estimate
            limiter.settle(_booked_tokens(walk.request), used)
        if self.safeguards.cache is not None:
            key = _key(walk.request, spec.tier)
            self.safeguards.cache.put(
                key, spec.name, spec.tier.value, completion.text, u.prompt_tokens,
                u.completion_tokens,
            )  # fmt: skip
        return self._result(walk, spec, completion)

    def _result(self, walk: _Walk, spec: ModelSpec, completion: Completion) -> Result:
        flight, usage = walk.flight, completion.usage
        assert flight.decision is not None, "a request is answered only after a decision"
        return Result(
            request_id=flight.request.id,
            text=completion.text,
            model=spec.name,
            tier=spec.tier,
            cost_usd=usage.cost_usd,
            latency_ms=flight.elapsed_ms(),
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            decision=flight.decision,
            verdicts=flight.verdicts,
            attempts=tuple(walk.attempts),
            created_at=flight.created,
        )

    def _failed(self, walk: _Walk, t: _Try, exc: ProviderError) -> float | None:
        """Record a failed attempt; returns how long to wait before retrying this model, or None
        to move on (not retryable, retries used up, or the wait would pass the deadline)."""
        spec = t.spec
        wait = self.safeguards.retry.wait_before_retry(
            exc, t.retry + 1, walk.deadline.remaining(), self.safeguards.rng
        )
        own = isinstance(exc, RateLimitedError) or exc.kind == "budget"
        if self.safeguards.breakers is not None and exc.kind in BREAKER_KINDS and not own:
            breaker = self.safeguards.breakers.get(spec.name)
            breaker.record_failure(f"{exc.kind}: {self.redact(str(exc))}"[:200])
            if breaker.state == "open":
                wait = None  # this failure opened the breaker: no retry
        walk.attempts.append(
            Attempt(
                model=spec.name,
                tier=spec.tier,
                ok=False,
                latency_ms=(time.perf_counter() - t.started) * 1000,
                error_kind=exc.kind,
                error=self.redact(str(exc))[:500],
                status_code=exc.status_code,
                retry_after_s=exc.retry_after_s,
                retry_in_s=None if wait is None else round(wait, 3),
            )
        )
        if exc.kind == "context_window":
            walk.overflowed_window = max(walk.overflowed_window or 0, spec.context_window)
        return wait

    def _skipped(self, walk: _Walk, spec: ModelSpec, kind: str, why: str) -> None:
        walk.attempts.append(
            Attempt(
                model=spec.name,
                tier=spec.tier,
                ok=False,
                latency_ms=0.0,
                error_kind=kind,
                error=why,
                skipped=True,
            )
        )

    def _release(self, hold: Hold | None) -> None:
        if self.safeguards.guard is not None:
            self.safeguards.guard.release(hold)

    def _all_failed(self, walk: _Walk) -> AllCandidatesFailed:
        detail = "; ".join(f"{a.model}: {a.error_kind} ({a.error})" for a in walk.attempts)
        if walk.deadline.expired:
            detail = f"the deadline of {walk.deadline.seconds:g} s passed; {detail}"
        return AllCandidatesFailed(
            f"every candidate failed: {detail or 'no candidate to try'}",
            walk.attempts,
            request_id=walk.request.id,
        )


class _Try:
    """One attempt at one model, used as `async with`: its hold is released and its failure
    recorded on exit. A `ProviderError` is swallowed (`failed`, `wait` tell the walk what next),
    unless text already reached the caller: then it becomes `StreamBroken`."""

    def __init__(self, executor: Executor, walk: _Walk, spec: ModelSpec, retry: int) -> None:
        self.executor, self.walk, self.spec, self.retry = executor, walk, spec, retry
        self.started = time.perf_counter()
        self.hold: Hold | None = None
        self.failed = False
        self.wait: float | None = None
        self.partial: list[str] = []

    async def admit(self) -> tuple[Endpoint, CallParams]:
        """Reserve budget, pass the rate limit, and resolve the endpoint: ready to call."""
        ex = self.executor
        self.hold = await ex._admit(self.walk, self.spec)
        endpoint = await ex.endpoints.resolve(self.spec)
        return endpoint, ex._params(self.walk, self.spec)

    async def __aenter__(self) -> _Try:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self.executor._release(self.hold)
        if not isinstance(exc, ProviderError):
            return False
        self.failed = True
        self.wait = self.executor._failed(self.walk, self, exc)
        if self.partial:  # text already reached the caller: no retry, no failover
            raise StreamBroken(exc, "".join(self.partial), self.walk.attempts) from exc
        return True


def _key(request: Request, tier: Tier) -> str:
    return cache_key(tier.value, request.messages, request.max_tokens, request.temperature)


def _booked_tokens(request: Request) -> int:
    """What a call is booked at against a tokens-per-minute limit before its usage is known."""
    return prompt_tokens(request) + (request.max_tokens or 0)
