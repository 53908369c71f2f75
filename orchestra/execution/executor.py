"""The executor: walks a decision's candidates through the backend until one answers.

Per candidate: skip it if its breaker is open (or its window is too small after a context-window
error), wait until the backend can call it (LiteLLM's import, off the model's clock), book its
worst-case cost in the ledger, wait for its rate limit, and call it within its share of the
request's deadline: at most half of what is left while other candidates wait behind
it, so a model that hangs cannot starve them. A retryable failure (5xx, 429, a refused
connection) is retried with backoff, honouring Retry-After, while the deadline allows; a timeout
moves on. A stream must start within the model's first-chunk timeout and never go quiet for
longer than its idle timeout. Every attempt, skip, cache hit and charge is recorded on the flight.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from orchestra.core.catalog import Catalog
from orchestra.core.decision import Decision
from orchestra.core.errors import (
    AllCandidatesFailed,
    ProviderError,
    RateLimitedError,
    RejectedRequest,
    StreamBroken,
    is_cancellation,
)
from orchestra.core.model_spec import ModelSpec
from orchestra.core.request import Request, as_sent
from orchestra.core.result import Attempt, Result, Usage
from orchestra.core.tier import Tier
from orchestra.execution.backend import Backend, CallParams, Completion, Endpoint, StreamPiece
from orchestra.execution.balancing import Balancer
from orchestra.execution.cache import cache_key
from orchestra.execution.endpoints import Endpoints
from orchestra.execution.flight import Flight
from orchestra.execution.retry import Deadline
from orchestra.execution.safeguards import Safeguards, limiters_for
from orchestra.spend.estimate import cost_usd, messages_tokens
from orchestra.spend.guard import Booking
from orchestra.spend.ledger import Charge
from orchestra.spend.settle import AnswerMeter, settle_usage

log = logging.getLogger("orchestra.executor")

# A reservation outlives its attempt by this much before another process may count it as lost.
LEASE_MARGIN_S = 60.0

Mask = Callable[[str, Request], str]


@dataclass
class _Walk:
    """One request's walk down its candidates: its deadline and what the attempts taught."""

    flight: Flight
    deadline: Deadline
    catalog: Catalog
    plan: list[ModelSpec]
    overflowed_window: int | None = None

    @property
    def request(self) -> Request:
        return self.flight.request


class Executor:
    """Tries each candidate in order under the `Safeguards`; a failure moves on to the next.

    Streaming fails over transparently until the first piece of text has been yielded; after that
    a failure ends the stream with `StreamBroken`. `mask` cleans every provider message before it
    is kept, logged or raised (secrets out, the prompt out when prompts are not kept).
    """

    def __init__(
        self,
        backend: Backend,
        catalog: Catalog,
        endpoints: Endpoints,
        mask: Mask = lambda text, request: text,
        safeguards: Safeguards | None = None,
    ) -> None:
        self.backend = backend
        self.catalog = catalog
        self.endpoints = endpoints
        self.mask = mask
        self.safeguards = safeguards or Safeguards()
        # Planned orders by (first candidate's id, length): (candidates, catalog, order).
        self._orders: dict[tuple[int, int], tuple[tuple[Any, ...], Catalog, tuple[ModelSpec, ...]]]
        self._orders = {}

    def use_catalog(self, catalog: Catalog) -> None:
        """Call the models of `catalog` from now on (a request in flight keeps the catalog its
        decision was taken against); each model's rate limiter follows its limits."""
        limiters = limiters_for(catalog, self.safeguards.limiters)
        self.safeguards = dataclasses.replace(self.safeguards, limiters=limiters)
        self.catalog = catalog

    def plan(self, decision: Decision, catalog: Catalog | None = None) -> list[ModelSpec]:
        """The decision's models (from `catalog`, by default the executor's) in the order they
        will be tried: each tier ordered by the balancer, a model the health checks found down
        last."""
        catalog = catalog or self.catalog
        balancer = self.safeguards.balancer
        fixed = balancer is None or all(v == "priority" for v in balancer.strategies.values())
        specs = self._fixed_order(decision, catalog) if fixed else None
        if specs is None:
            specs = [catalog.get(c.model) for c in decision.candidates]
            if balancer is not None:
                specs = _by_tier(balancer, specs)
            if fixed:
                self._remember_order(decision, catalog, specs)
        health = self.safeguards.health
        if health is None or not health.down:
            return specs
        # A model the health checks found down goes last rather than out: a check can be stale.
        down = health.down
        return sorted(specs, key=lambda s: s.name in down)

    def _fixed_order(self, decision: Decision, catalog: Catalog) -> list[ModelSpec] | None:
        """The order planned before for the same candidates and catalog, when no balancer
        strategy moves it (the built-in policies hand out the same candidate objects for the
        same lists: a long catalog is walked once per list)."""
        cs = decision.candidates
        seen = self._orders.get((id(cs[0]), len(cs))) if cs else None
        if seen is None or seen[1] is not catalog or seen[0] != cs:
            return None
        return list(seen[2])

    def _remember_order(self, decision: Decision, catalog: Catalog, specs: list[ModelSpec]) -> None:
        cs = decision.candidates
        if not cs:
            return
        if len(self._orders) >= 256:
            self._orders.clear()
        self._orders[(id(cs[0]), len(cs))] = (tuple(cs), catalog, tuple(specs))

    async def complete(self, flight: Flight) -> Result:
        """Answer `flight` (whose decision is taken) with the first candidate that succeeds."""
        walk = self._walk(flight)
        if (hit := await self._cached(walk)) is not None:
            return hit
        async with aclosing(self._tries(walk)) as tries:
            async for t in tries:
                async with t:
                    endpoint, params = await t.admit(stream=False)
                    messages = walk.request.messages
                    if t.booking is not None and t.booking.cut:  # see `BudgetGuard.admit`
                        pieces = self.backend.stream(t.spec, endpoint, messages, params)
                        call = self._gathered(t, pieces)
                    else:
                        call = self.backend.complete(t.spec, endpoint, messages, params)
                    completion = await self._within(t.timeout_s, call)
                if not t.failed:
                    return self._succeeded(walk, t, completion)
        raise self._all_failed(walk)

    async def stream(self, flight: Flight) -> AsyncGenerator[StreamPiece | Result, None]:
        """Yield text pieces, then one final `Result` holding the whole text."""
        walk = self._walk(flight)
        if (hit := await self._cached(walk)) is not None:
            flight.streaming = walk.catalog.get(hit.model)
            yield StreamPiece(text=hit.text)
            yield hit
            return
        async with aclosing(self._tries(walk)) as tries:
            async for t in tries:
                usage: Usage | None = None
                finish: str | None = None
                async with t:
                    endpoint, params = await t.admit(stream=True)
                    pieces = self.backend.stream(t.spec, endpoint, walk.request.messages, params)
                    async with aclosing(self._paced(walk, t, pieces)) as paced:
                        async for piece in paced:
                            usage = piece.usage or usage
                            finish = piece.finish_reason or finish
                            if not piece.text:
                                continue
                            flight.streaming = t.spec
                            past_cap = t.received(piece.text)
                            t.delivered = True
                            yield piece
                            if past_cap:  # the provider ignores its cap: cut it there
                                break
                if not t.failed:
                    text = "".join(t.partial)
                    done = Completion(
                        text=text, usage=usage or Usage(estimated=True), finish_reason=finish
                    )
                    yield self._succeeded(walk, t, done)
                    return
        raise self._all_failed(walk)

    # -- the walk ----------------------------------------------------------------------------------

    def _walk(self, flight: Flight) -> _Walk:
        assert flight.decision is not None, "the executor runs a decision"
        deadline = Deadline(flight.request.timeout_s or self.safeguards.deadline_s)
        catalog = flight.catalog or self.catalog
        walk = _Walk(flight, deadline, catalog, self.plan(flight.decision, catalog))
        flight.order = tuple(s.name for s in walk.plan)
        return walk

    async def _tries(self, walk: _Walk) -> AsyncGenerator[_Try, None]:
        """Each attempt to make, in order: every candidate, retried while its failures allow."""
        for spec, last in self._candidates(walk):
            retry = 0
            if walk.deadline.expired:
                self._release_breaker(spec)  # let through, never called
            while not walk.deadline.expired:
                t = _Try(self, walk, spec, retry, last)
                yield t
                if not t.failed or t.wait is None:
                    break
                retry += 1
                await asyncio.sleep(t.wait)

    def _candidates(self, walk: _Walk) -> Iterator[tuple[ModelSpec, bool]]:
        """The planned models minus those to skip, each with whether it is the last.

        A local model whose breaker is open is not dropped but tried after all the others: on
        this device, free, it is what answers when nothing else can (offline, the network
        gone), and skipping it would only guarantee a failure.
        """
        deferred: list[ModelSpec] = []
        for i, spec in enumerate(walk.plan):
            if walk.overflowed_window is not None and spec.context_window <= walk.overflowed_window:
                self._skipped(
                    walk, spec, "context_window", f"window {spec.context_window} too small"
                )
                continue
            breakers = self.safeguards.breakers
            breaker = breakers.get(spec.name) if breakers is not None else None
            if breaker is not None and not breaker.allow():
                self._skipped(
                    walk, spec, "breaker_open", breaker.why_not(), retry_after_s=breaker.retry_in()
                )
                if spec.tier is Tier.LOCAL:
                    deferred.append(spec)
                continue
            yield spec, i == len(walk.plan) - 1 and not deferred
        for i, spec in enumerate(deferred):
            if walk.overflowed_window is not None and spec.context_window <= walk.overflowed_window:
                continue  # already said: its window is too small
            log.info("%s: breaker open, but no other model answered: trying it", spec.name)
            yield spec, i == len(deferred) - 1

    async def _within(self, seconds: float, call: Awaitable[Completion]) -> Completion:
        """The whole call within `seconds`, however slowly a server trickles its answer (the
        backend's own timeout may be rounded up: this one is exact)."""
        try:
            async with asyncio.timeout(seconds):
                return await call
        except TimeoutError:  # it may have been sent, and be billed
            raise ProviderError(
                f"no answer within {seconds:.1f} s", kind="timeout", sent=True
            ) from None

    async def _gathered(self, t: _Try, pieces: AsyncIterator[StreamPiece]) -> Completion:
        """A whole answer read from a stream and cut as soon as it reaches the call's cap (all
        its reservation pays for: an honest provider stops there anyway). Nothing of it reaches
        the caller until the end, so a failure mid-way still fails over."""
        usage: Usage | None = None
        finish: str | None = None
        async with aclosing(pieces) as stream:  # type: ignore[type-var]
            async for piece in stream:
                usage = piece.usage or usage
                finish = piece.finish_reason or finish
                if piece.text:
                    t.received(piece.text)
                    if t.meter.reached:
                        break
        return Completion(
            text="".join(t.partial), usage=usage or Usage(estimated=True), finish_reason=finish
        )

    async def _paced(
        self, walk: _Walk, t: _Try, pieces: AsyncIterator[StreamPiece]
    ) -> AsyncGenerator[StreamPiece, None]:
        """`pieces`, each within its time: the first within the first-chunk timeout, each next
        one within the idle timeout, all within the request's deadline."""
        spec = t.spec
        async with aclosing(pieces) as stream:  # type: ignore[type-var]
            it = aiter(stream)
            wait, what = t.timeout_s, "no first chunk"
            while True:
                wait = min(wait, walk.deadline.remaining())
                try:
                    async with asyncio.timeout(wait):
                        piece = await anext(it)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise ProviderError(
                        f"{spec.name}: {what} within {wait:.1f} s",
                        kind="timeout",
                        model=spec.name,
                        sent=True,  # it may be generating, and be billed
                    ) from None
                yield piece
                if piece.text:
                    wait, what = spec.idle_timeout_s, "no chunk"

    def _attempt_timeout(self, walk: _Walk, spec: ModelSpec, last: bool, stream: bool) -> float:
        """An attempt's time: its model's limit, and never more than half of what is left of the
        deadline while other candidates wait behind it."""
        remaining = walk.deadline.remaining()
        share = remaining if last else remaining / 2
        limit = spec.first_chunk_timeout_s if stream else spec.timeout_s
        return max(0.001, min(limit, share))

    async def _ready(self, walk: _Walk, spec: ModelSpec) -> Endpoint:
        """Wait, within the request's deadline, until `spec` can be called at once, and return
        where: the first call to a cloud model waits here for LiteLLM's import, the first call
        to the embedded model for its start, both off the model's clock."""
        try:
            async with asyncio.timeout(walk.deadline.remaining()):
                await self.backend.ready(spec)
                return await self.endpoints.resolve(spec)
        except TimeoutError:
            raise ProviderError(
                f"{spec.name}: still loading when the deadline passed",
                kind="unavailable",
                model=spec.name,
            ) from None

    async def _admit(self, walk: _Walk, t: _Try, stream: bool) -> Booking | None:
        """Book budget and pass the model's rate limit (both may refuse: a ProviderError)."""
        guard, spec = self.safeguards.guard, t.spec
        booking = None
        if guard is not None:
            lease = walk.deadline.remaining() + LEASE_MARGIN_S
            # Within the attempt's share of the deadline: a store busy with another process's
            # write must not hold the request past it (a free candidate may still answer).
            wait = self._attempt_timeout(walk, spec, t.last, stream)
            try:
                async with asyncio.timeout(wait):
                    booking = await guard.admit(spec, walk.request, lease, stream=stream)
            except TimeoutError:  # a hold granted after this is given back (`granted`)
                raise ProviderError(
                    f"{spec.name}: the budget could not be checked within {wait:.1f} s"
                    " (the store is busy)",
                    kind="budget",
                    model=spec.name,
                ) from None
        limiter = self.safeguards.limiters.get(spec.name)
        if limiter is not None:
            try:
                await limiter.acquire(
                    _booked_tokens(walk.request, spec),
                    priority=walk.request.priority,
                    deadline_s=walk.deadline.remaining(),
                )
            except BaseException:
                if guard is not None:
                    guard.release(booking)
                raise
        return booking

    # -- outcomes ----------------------------------------------------------------------------------

    async def _cached(self, walk: _Walk) -> Result | None:
        decision = walk.flight.decision
        cache = self.safeguards.cache
        if cache is None or decision is None or not decision.candidates:
            return None
        first: Tier = decision.candidates[0].tier
        hit = await cache.get(_key(walk.request, first))
        if hit is None or hit.model not in walk.catalog:
            return None
        forced = walk.request.model
        if (forced is not None and hit.model != forced) or all(
            c.model != hit.model for c in decision.candidates
        ):  # another model's answer: one this request may not use (a veto), or not the one asked
            return None
        spec = walk.catalog.get(hit.model)
        walk.flight.attempts.append(
            Attempt(model=spec.name, tier=spec.tier, ok=True, latency_ms=0.0, cached=True)
        )
        usage = Usage(prompt_tokens=hit.prompt_tokens, completion_tokens=hit.completion_tokens)
        walk.flight.charges.append(_charge(spec, usage, None))  # costs nothing
        return self._result(walk, spec, Completion(text=hit.text, usage=usage))

    def _succeeded(self, walk: _Walk, t: _Try, completion: Completion) -> Result:
        spec, u = t.spec, t.settled(completion.usage, completion.text)
        ms = (time.perf_counter() - t.started) * 1000
        walk.flight.attempts.append(
            Attempt(model=spec.name, tier=spec.tier, ok=True, latency_ms=ms)
        )
        walk.flight.charges.append(_charge(spec, u, t.booking))
        safe = self.safeguards
        if safe.breakers is not None:
            safe.breakers.get(spec.name).record_success()
        if safe.latency is not None:
            safe.latency.observe(spec.name, ms)
        used = u.prompt_tokens + u.completion_tokens
        limiter = safe.limiters.get(spec.name)
        if limiter is not None and used > 0:  # the real usage replaces the booked estimate
            limiter.settle(_booked_tokens(walk.request, spec), used)
        if safe.cache is not None:
            safe.cache.put(
                _key(walk.request, spec.tier), spec.name, spec.tier.value, completion.text,
                u.prompt_tokens, u.completion_tokens,
            )  # fmt: skip
        cap = t.params.max_tokens if t.params is not None else None
        settled = Completion(text=completion.text, usage=u, finish_reason=completion.finish_reason)
        return self._result(walk, spec, settled, cap)

    def _result(
        self, walk: _Walk, spec: ModelSpec, completion: Completion, cap: int | None = None
    ) -> Result:
        flight, usage = walk.flight, completion.usage
        assert flight.decision is not None, "a request is answered only after a decision"
        return Result(
            request_id=flight.request.id,
            text=completion.text,
            model=spec.name,
            tier=spec.tier,
            cost_usd=float(sum(c.cost_usd for c in flight.charges)),  # every call it took
            latency_ms=flight.elapsed_ms(),
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            decision=flight.decision,
            verdicts=flight.verdicts,
            attempts=tuple(flight.attempts),
            order=flight.order,
            created_at=flight.created,
            max_tokens=cap,
            finish_reason=completion.finish_reason,
        )

    def _failed(self, walk: _Walk, t: _Try, exc: ProviderError) -> float | None:
        """Record a failed attempt; returns how long to wait before retrying this model, or None
        to move on (not retryable, retries used up, or the wait would pass the deadline)."""
        spec, safe = t.spec, self.safeguards
        wait = safe.retry.wait_before_retry(exc, t.retry + 1, walk.deadline.remaining(), safe.rng)
        own = isinstance(exc, RateLimitedError) or exc.kind in ("budget", "invalid_request")
        trips = safe.breakers is not None and exc.kind in safe.breakers.settings.trip_on
        if safe.breakers is not None and trips and not own:
            breaker = safe.breakers.get(spec.name)
            breaker.record_failure(f"{exc.kind}: {exc}"[:200])
            if breaker.state == "open":
                wait = None  # this failure opened the breaker: no retry
        else:
            self._release_breaker(spec)
        walk.flight.attempts.append(
            Attempt(
                model=spec.name,
                tier=spec.tier,
                ok=False,
                latency_ms=(time.perf_counter() - t.started) * 1000,
                error_kind=exc.kind,
                error=str(exc)[:500],
                status_code=exc.status_code,
                retry_after_s=exc.retry_after_s,
                retry_in_s=None if wait is None else round(wait, 3),
            )
        )
        if exc.kind == "context_window":
            walk.overflowed_window = max(walk.overflowed_window or 0, spec.context_window)
        return wait

    def _masked(self, exc: ProviderError, request: Request) -> ProviderError:
        """The same failure with a message safe to keep: no secrets, no prompt, not too long."""
        if isinstance(exc, RateLimitedError):
            return exc  # our own words
        clean = ProviderError(
            self.mask(str(exc), request)[:1000],
            kind=exc.kind,
            model=exc.model,
            status_code=exc.status_code,
            retry_after_s=exc.retry_after_s,
            billed=exc.billed,
            sent=exc.sent,
        )
        clean.__cause__ = None
        return clean

    def _abandoned(self, walk: _Walk, t: _Try, exc: BaseException) -> None:
        """An attempt ended by its caller leaving ("cancelled") or by an exception that is not a
        provider's failure ("error": a backend's bug, named by its type alone)."""
        received = (
            f"after {len(''.join(t.partial))} characters" if t.partial else "before an answer"
        )
        left = is_cancellation(exc)
        self._release_breaker(t.spec)
        walk.flight.attempts.append(
            Attempt(
                model=t.spec.name,
                tier=t.spec.tier,
                ok=False,
                latency_ms=(time.perf_counter() - t.started) * 1000,
                error_kind="cancelled" if left else "error",
                error=f"the call was {'abandoned' if left else f'ended by {type(exc).__name__}'}"
                f" {received}",
            )
        )

    def _release_breaker(self, spec: ModelSpec) -> None:
        if self.safeguards.breakers is not None:
            self.safeguards.breakers.get(spec.name).release()

    def _skipped(
        self, walk: _Walk, spec: ModelSpec, kind: str, why: str, retry_after_s: float | None = None
    ) -> None:
        walk.flight.attempts.append(
            Attempt(
                model=spec.name,
                tier=spec.tier,
                ok=False,
                latency_ms=0.0,
                error_kind=kind,
                error=why,
                skipped=True,
                retry_after_s=retry_after_s,
            )
        )

    def _all_failed(self, walk: _Walk) -> AllCandidatesFailed:
        attempts = walk.flight.attempts
        detail = "; ".join(f"{a.model}: {a.error_kind} ({a.error})" for a in attempts)
        if walk.deadline.expired:
            detail = f"the deadline of {walk.deadline.seconds:g} s passed; {detail}"
        return AllCandidatesFailed(
            f"every candidate failed: {detail or 'no candidate to try'}",
            attempts,
            request_id=walk.request.id,
        )


class _Try:
    """One attempt at one model, used as `async with`: on exit its reservation is settled (a
    charge for what was received, or released) and its failure recorded. A `ProviderError` is
    swallowed (`failed`, `wait` tell the walk what next) unless text already reached the caller
    (then `StreamBroken`) or the request itself is at fault (then `RejectedRequest`)."""

    def __init__(
        self, executor: Executor, walk: _Walk, spec: ModelSpec, retry: int, last: bool
    ) -> None:
        self.executor, self.walk, self.spec, self.retry, self.last = (
            executor, walk, spec, retry, last
        )  # fmt: skip
        self.started = time.perf_counter()
        self.booking: Booking | None = None
        self.timeout_s = 0.0
        self.failed = False
        self.wait: float | None = None
        self.partial: list[str] = []  # the text received so far
        self.delivered = False  # some of it reached the caller
        self.params: CallParams | None = None
        self.meter = AnswerMeter(None)

    async def admit(self, *, stream: bool) -> tuple[Endpoint, CallParams]:
        """Wait for the backend and the endpoint, book budget, pass the rate limit: ready to
        call."""
        ex, walk, spec = self.executor, self.walk, self.spec
        endpoint = await ex._ready(walk, spec)
        self.started = time.perf_counter()  # loading is not this model's latency
        self.booking = await ex._admit(walk, self, stream)
        self.timeout_s = ex._attempt_timeout(walk, spec, self.last, stream)
        booked = self.booking.max_tokens if self.booking is not None else None
        self.params = CallParams(
            timeout_s=self.timeout_s,
            max_tokens=booked or walk.request.max_tokens,
            temperature=walk.request.temperature,
        )
        self.meter = AnswerMeter(self.params.max_tokens)
        return endpoint, self.params

    async def __aenter__(self) -> _Try:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        ex = self.executor
        if exc is None:
            return False  # the success path charges the answer
        if not isinstance(exc, ProviderError):  # cancelled, its reader left, or a bug: kept as is
            self._settle_partial(None, sent=True)  # the call was under way
            ex._abandoned(self.walk, self, exc)
            return False
        self._settle_partial(exc.billed, exc.sent)
        masked = ex._masked(exc, self.walk.request)
        self.failed = True
        self.wait = ex._failed(self.walk, self, masked)
        attempts = self.walk.flight.attempts
        if masked.kind == "invalid_request":
            raise RejectedRequest(str(masked), attempts, self.walk.request.id) from None
        if self.delivered:  # text already reached the caller: no retry, no failover
            raise StreamBroken(masked, "".join(self.partial), attempts) from None
        return True

    def received(self, text: str) -> bool:
        """Keep a piece of the answer; True once the answer has provably passed its cap."""
        self.partial.append(text)
        return self.meter.add(text)

    def settled(self, usage: Usage, text: str) -> Usage:
        """The usage to charge: the provider's, unless the text proves it too low, and answer
        tokens past the cap only when the provider provably ran past it (`settle_usage`)."""
        cap = self.params.max_tokens if self.params is not None else None
        sent = as_sent(self.walk.request.messages, self.spec.system_prompt)
        return settle_usage(self.spec, usage, text, sent, cap)

    def _settle_partial(self, billed: Usage | None, sent: bool) -> None:
        """A call that ended without an answer: billed for the text it sent, or for what the
        provider reported it billed (`billed`, an empty answer); one that reached the provider
        with nothing back (`sent`) at its reservation, the worst case it may have been billed;
        else released."""
        guard = self.executor.safeguards.guard
        charges = self.walk.flight.charges
        if self.partial:
            prompt = self.booking.prompt_tokens if self.booking else 0
            usage = self.settled(Usage(prompt_tokens=prompt, estimated=True), "".join(self.partial))
            charges.append(_charge(self.spec, usage, self.booking, "partial"))
        elif billed is not None:
            usage = self.settled(billed, "")
            charges.append(_charge(self.spec, usage, self.booking, "partial"))
        elif sent and self.params is not None and not self.spec.is_free:
            prompt = (
                self.booking.prompt_tokens
                if self.booking is not None
                else messages_tokens(as_sent(self.walk.request.messages, self.spec.system_prompt))
            )
            charges.append(_lost(self.spec, self.booking, prompt, self.params.max_tokens))
        elif guard is not None:
            guard.release(self.booking)


def _by_tier(balancer: Balancer, specs: list[ModelSpec]) -> list[ModelSpec]:
    """`specs` grouped by tier in the order the tiers first appear, each tier as the balancer
    orders it."""
    ordered: list[ModelSpec] = []
    for tier in dict.fromkeys(s.tier for s in specs):
        ordered += balancer.order(tier, [s for s in specs if s.tier is tier])
    return ordered


def _charge(spec: ModelSpec, usage: Usage, booking: Booking | None, kind: str = "answer") -> Charge:
    return Charge(
        model=spec.name,
        tier=spec.tier,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cost_usd=usage.cost_usd,
        kind="partial" if kind == "partial" else "answer",
        hold_id=booking.hold.id if booking is not None and booking.hold is not None else None,
        usage_reported=not usage.estimated,
        at=time.time(),
    )


def _lost(spec: ModelSpec, booking: Booking | None, prompt: int, cap: int | None) -> Charge:
    """A call that reached the provider and brought nothing back: charged at its reservation
    (its prompt and its whole answer cap, as a dead process's reservation is), or, with none, at
    its `prompt` and answer `cap` at the model's price (the prompt alone without a cap)."""
    held = booking.hold if booking is not None else None
    usd = held.usd if held is not None else (cost_usd(spec, prompt, cap or 0) or 0.0)
    return Charge(
        model=spec.name,
        tier=spec.tier,
        prompt_tokens=prompt,
        completion_tokens=cap or 0,
        cost_usd=usd,
        kind="lost",
        hold_id=held.id if held is not None else None,
        usage_reported=False,
        at=time.time(),
    )


def _key(request: Request, tier: Tier) -> str:
    return cache_key(tier.value, request.messages, request.max_tokens, request.temperature)


def _booked_tokens(request: Request, spec: ModelSpec) -> int:
    """What a call is booked at against a tokens-per-minute limit before its usage is known: the
    prompt as sent (the model's system prompt too) and the answer cap."""
    return messages_tokens(as_sent(request.messages, spec.system_prompt)) + (
        request.max_tokens or 0
    )
