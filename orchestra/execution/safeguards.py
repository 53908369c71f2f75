"""What protects each call the executor makes: budget, breakers, retries, limits, cache, order."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from orchestra.core.model_spec import ModelSpec
from orchestra.execution.balancing import Balancer, BalancingConfig, LatencyTracker
from orchestra.execution.breaker import BreakerBoard, BreakerSettings, LoggingBreakerListener
from orchestra.execution.breaker.storage import BreakerStorage
from orchestra.execution.cache import CacheConfig, CacheStore, ResponseCache
from orchestra.execution.health import HealthChecker
from orchestra.execution.rate_limit import RateLimit, RateLimiter
from orchestra.execution.retry import RetryPolicy
from orchestra.spend.guard import BudgetGuard


@dataclass(frozen=True, kw_only=True)
class Safeguards:
    """The executor's collaborators, each optional; the defaults make a plain failover chain.

    `guard` reserves budget, `breakers` skip dead models, `retry` retries a model within the
    request's `deadline_s`, `limiters` hold each model to its rate limit, `cache` answers repeats,
    `balancer` orders the models of a tier, `latency` learns each model's speed from real calls,
    and a model `health` checks found down is tried last.
    """

    guard: BudgetGuard | None = None
    breakers: BreakerBoard | None = None
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(attempts_per_model=1))
    limiters: Mapping[str, RateLimiter] = field(default_factory=dict)
    cache: ResponseCache | None = None
    balancer: Balancer | None = None
    latency: LatencyTracker | None = None
    health: HealthChecker | None = None
    deadline_s: float = 120.0
    rng: random.Random = field(default_factory=random.Random)


def build_safeguards(
    *,
    models: Sequence[ModelSpec],
    guard: BudgetGuard | None,
    retry: RetryPolicy,
    breaker: BreakerSettings,
    breaker_storage: BreakerStorage,
    balancing: BalancingConfig,
    cache: CacheConfig,
    cache_store: CacheStore,
    latency: LatencyTracker,
    health: HealthChecker | None,
    deadline_s: float,
) -> Safeguards:
    """The safeguards the configuration's sections ask for, wired once."""
    return Safeguards(
        guard=guard,
        breakers=BreakerBoard(breaker, breaker_storage, listeners=[LoggingBreakerListener()]),
        retry=retry,
        limiters=limiters_for(models, {}),
        cache=ResponseCache(cache_store, ttl_s=cache.ttl_s) if cache.enabled else None,
        balancer=Balancer(balancing.by_tier(), latency),
        latency=latency,
        health=health,
        deadline_s=deadline_s,
    )


def limiters_for(
    models: Iterable[ModelSpec], current: Mapping[str, RateLimiter]
) -> dict[str, RateLimiter]:
    """A rate limiter for each model with limits: its current one when its limits are unchanged
    (it keeps what it has counted and queued), a new one otherwise."""
    out: dict[str, RateLimiter] = {}
    for m in models:
        if m.requests_per_minute or m.tokens_per_minute:
            fresh = _limiter(m)
            kept = current.get(m.name)
            out[m.name] = kept if kept is not None and kept.limit == fresh.limit else fresh
    return out


def _limiter(spec: ModelSpec) -> RateLimiter:
    limit = RateLimit(
        requests_per_minute=spec.requests_per_minute,
        tokens_per_minute=spec.tokens_per_minute,
        when_limited=spec.when_limited,
        queue_size=spec.limit_queue_size,
    )
    return RateLimiter(spec.name, limit)
