"""The executor: walks a decision's candidates through the backend until one answers.

Per candidate: skip it if its breaker is open (or its window is too small after a context-window
error), reserve budget, wait for its rate limit, call it with the time left in the request's
deadline, and on a retryable failure retry it with backoff (honouring Retry-After) while the
deadline allows; then move on. Every attempt, skip and cache hit is recorded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from orchestra.backend import Backend, CallParams, Completion, StreamPiece
from orchestra.budget_guard import Hold
from orchestra.catalog import Catalog
from orchestra.cost_estimate import prompt_tokens
from orchestra.decision import Decision
from orchestra.endpoints import Endpoints
from orchestra.errors import AllCandidatesFailed, ProviderError
from orchestra.model_spec import ModelSpec
from orchestra.rate_limit import RateLimitedError
from orchestra.request import Request
from orchestra.response_cache import cache_key
from orchestra.result import Attempt, Usage
from orchestra.retry import Deadline
from orchestra.safeguards import Safeguards
from orchestra.tier import Tier

# Failures that say something about the provider's health (not the caller's request or our own
# budget and limits) count against its circuit breaker.
BREAKER_KINDS = frozenset(
    {"timeout", "connection", "server", "rate_limit", "stream_broken", "auth", "unknown"}
)


@dataclass(frozen=True, kw_only=True)
class Answer:
    """What the executor hands back: the answering model, its completion, and every attempt."""

    spec: ModelSpec
    completion: Completion
    attempts: tuple[Attempt, ...]
    cached: bool = False


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


@dataclass
class _Walk:
    """One request's walk down its candidates: the attempts so far and what they taught."""

    request: Request
    deadline: Deadline
    attempts: list[Attempt] = field(default_factory=list)
    overflowed_window: int | None = None


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
        self.safe = safeguards or Safeguards()

    async def complete(self, request: Request, decision: Decision) -> Answer:
        walk = _Walk(request, Deadline(request.timeout_s or self.safe.deadline_s))
        if (hit := await self._cached(walk, decision)) is not None:
            return hit
        for spec in self._candidates(walk, decision):
            retry = 0
            while not walk.deadline.expired:
                started, hold = time.perf_counter(), None
                try:
                    hold = await self._admit(walk, spec)
                    endpoint = await self.endpoints.resolve(spec)
                    params = self._params(walk, spec)
                    call = self.backend.complete(spec, endpoint, request.messages, params)
                    completion = await self._bounded(walk, call)
                except ProviderError as exc:
                    retry += 1
                    if (wait := self._failed(walk, spec, exc, started, retry)) is None:
                        break
                    await asyncio.sleep(wait)
                    continue
                finally:
                    self._release(hold)
                return self._succeeded(walk, spec, completion, started)
        raise self._all_failed(walk)

    async def stream(
        self, request: Request, decision: Decision
    ) -> AsyncIterator[StreamPiece | Answer]:
        """Yield text pieces, then one final `Answer` (whose completion holds the whole text)."""
        walk = _Walk(request, Deadline(request.timeout_s or self.safe.deadline_s))
        if (hit := await self._cached(walk, decision)) is not None:
            yield StreamPiece(text=hit.completion.text)
            yield hit
            return
        for spec in self._candidates(walk, decision):
            retry = 0
            while not walk.deadline.expired:
                started, hold, parts, usage = time.perf_counter(), None, [], None
                try:
                    hold = await self._admit(walk, spec)
                    endpoint = await self.endpoints.resolve(spec)
                    params = self._params(walk, spec)
                    async for piece in self.backend.stream(
                        spec, endpoint, request.messages, params
                    ):
                        usage = piece.usage or usage
                        if piece.text:
                            parts.append(piece.text)
                            yield piece
                except ProviderError as exc:
                    retry += 1
                    wait = self._failed(walk, spec, exc, started, retry)
                    if parts:  # text already reached the caller: no retry, no failover
                        raise StreamBroken(exc, "".join(parts), tuple(walk.attempts)) from exc
                    if wait is None:
                        break
                    await asyncio.sleep(wait)
                    continue
                finally:
                    self._release(hold)
                completion = Completion(text="".join(parts), usage=usage or Usage())
                yield self._succeeded(walk, spec, completion, started)
                return
        raise self._all_failed(walk)

    # -- the walk ----------------------------------------------------------------------------------

    def _candidates(self, walk: _Walk, decision: Decision) -> Iterator[ModelSpec]:
        """The decision's models, each tier ordered by the balancer, minus those to skip."""
        for spec in self._balanced(decision):
            if walk.overflowed_window is not None and spec.context_window <= walk.overflowed_window:
                self._skipped(
                    walk, spec, "context_window", f"window {spec.context_window} too small"
                )
                continue
            breaker = self.safe.breakers.get(spec.name) if self.safe.breakers else None
            if breaker is not None and not breaker.allow():
                self._skipped(walk, spec, "breaker_open", breaker.why_not())
                continue
            yield spec

    async def _admit(self, walk: _Walk, spec: ModelSpec) -> Hold | None:
        """Reserve budget and pass the model's rate limit (both may refuse: a ProviderError)."""
        hold = self.safe.guard.hold(spec, walk.request) if self.safe.guard else None
        limiter = self.safe.limiters.get(spec.name)
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
        if self.safe.balancer is not None:
            ordered: list[ModelSpec] = []
            for tier in dict.fromkeys(s.tier for s in specs):  # tiers in the decision's order
                ordered += self.safe.balancer.order(tier, [s for s in specs if s.tier is tier])
            specs = ordered
        health = self.safe.health
        if health is None:
            return specs
        # A model the health checks found down goes last rather than out: a check can be stale.
        return sorted(specs, key=lambda s: health.status(s.name).healthy is False)

    # -- outcomes ----------------------------------------------------------------------------------

    async def _cached(self, walk: _Walk, decision: Decision) -> Answer | None:
        cache = self.safe.cache
        if cache is None or not decision.candidates:
            return None
        first: Tier = decision.candidates[0].tier
        hit = await cache.get(_key(walk.request, first))
        if hit is None or hit.model not in self.catalog:
            return None
        spec = self.catalog.get(hit.model)
        usage = Usage(prompt_tokens=hit.prompt_tokens, completion_tokens=hit.completion_tokens)
        attempt = Attempt(model=spec.name, tier=spec.tier, ok=True, latency_ms=0.0, cached=True)
        walk.attempts.append(attempt)
        completion = Completion(text=hit.text, usage=usage)  # a hit costs nothing
        return Answer(spec=spec, completion=completion, attempts=tuple(walk.attempts), cached=True)

    def _succeeded(
        self, walk: _Walk, spec: ModelSpec, completion: Completion, started: float
    ) -> Answer:
        ms = (time.perf_counter() - started) * 1000
        walk.attempts.append(Attempt(model=spec.name, tier=spec.tier, ok=True, latency_ms=ms))
        if self.safe.breakers is not None:
            self.safe.breakers.get(spec.name).record_success()
        if self.safe.latency is not None:
            self.safe.latency.observe(spec.name, ms)
        used = completion.usage.prompt_tokens + completion.usage.completion_tokens
        limiter = self.safe.limiters.get(spec.name)
        if limiter is not None and used > 0:  # the real usage replaces the booked estimate
            limiter.settle(_booked_tokens(walk.request), used)
        if self.safe.cache is not None:
            u = completion.usage
            key = _key(walk.request, spec.tier)
            self.safe.cache.put(
                key,
                spec.name,
                spec.tier.value,
                completion.text,
                u.prompt_tokens,
                u.completion_tokens,
            )
        return Answer(spec=spec, completion=completion, attempts=tuple(walk.attempts))

    def _failed(
        self, walk: _Walk, spec: ModelSpec, exc: ProviderError, started: float, retry: int
    ) -> float | None:
        """Record a failed attempt; returns how long to wait before retrying this model, or None
        to move on (not retryable, retries used up, or the wait would pass the deadline)."""
        wait = self.safe.retry.wait_before_retry(
            exc, retry, walk.deadline.remaining(), self.safe.rng
        )
        walk.attempts.append(
            Attempt(
                model=spec.name,
                tier=spec.tier,
                ok=False,
                latency_ms=(time.perf_counter() - started) * 1000,
                error_kind=exc.kind,
                error=self.redact(str(exc))[:500],
                status_code=exc.status_code,
                retry_after_s=exc.retry_after_s,
                retry_in_s=None if wait is None else round(wait, 3),
            )
        )
        if exc.kind == "context_window":
            walk.overflowed_window = max(walk.overflowed_window or 0, spec.context_window)
        own = isinstance(exc, RateLimitedError) or exc.kind == "budget"
        if self.safe.breakers is not None and exc.kind in BREAKER_KINDS and not own:
            breaker = self.safe.breakers.get(spec.name)
            breaker.record_failure(f"{exc.kind}: {exc}"[:200])
            if breaker.state == "open":
                return None  # this failure opened the breaker: no retry
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
        if self.safe.guard is not None:
            self.safe.guard.release(hold)

    def _all_failed(self, walk: _Walk) -> AllCandidatesFailed:
        detail = "; ".join(f"{a.model}: {a.error_kind} ({a.error})" for a in walk.attempts)
        if walk.deadline.expired:
            detail = f"the deadline of {walk.deadline.seconds:g} s passed; {detail}"
        return AllCandidatesFailed(
            f"every candidate failed: {detail or 'no candidate to try'}",
            walk.attempts,
            request_id=walk.request.id,
        )


def _key(request: Request, tier: Tier) -> str:
    return cache_key(tier.value, request.messages, request.max_tokens, request.temperature)


def _booked_tokens(request: Request) -> int:
    """What a call is booked at against a tokens-per-minute limit before its usage is known."""
    return prompt_tokens(request) + (request.max_tokens or 0)
