"""What protects each call the executor makes: budget, breakers, retries, limits, cache, order."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from orchestra.balancing import Balancer, LatencyTracker
from orchestra.budget_guard import BudgetGuard
from orchestra.catalog import Catalog
from orchestra.config import Config
from orchestra.model_spec import ModelSpec
from orchestra.rate_limit import RateLimit, RateLimiter
from orchestra.response_cache import ResponseCache
from orchestra.retry import RetryPolicy
from orchestra.spend import SpendTracker
from orchestra.store import Store
from orchestra.tier import Tier

if TYPE_CHECKING:
    from orchestra.breaker import BreakerBoard
    from orchestra.health import HealthChecker


@dataclass(kw_only=True)
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


async def build_safeguards(
    config: Config, catalog: Catalog, store: Store, spend: SpendTracker, latency: LatencyTracker
) -> Safeguards:
    """The safeguards a config asks for; breaker state is loaded from (and saved to) the store."""
    from orchestra.breaker import BreakerBoard, BreakerSettings, LoggingBreakerListener
    from orchestra.breaker.sqlite_storage import SqliteBreakerStorage

    storage = SqliteBreakerStorage(store)
    await storage.preload()
    b, r = config.breaker, config.retry
    settings = BreakerSettings(
        failure_threshold=b.failure_threshold,
        recovery_s=b.recovery_s,
        window=b.window,
        min_calls=b.min_calls,
        failure_rate=b.failure_rate,
    )
    return Safeguards(
        guard=BudgetGuard(config.budget, spend),
        breakers=BreakerBoard(settings, storage, listeners=[LoggingBreakerListener()]),
        retry=RetryPolicy(
            attempts_per_model=r.attempts_per_model, base_s=r.base_s, cap_s=r.cap_s, jitter=r.jitter
        ),
        limiters={
            m.name: _limiter(m) for m in catalog if m.requests_per_minute or m.tokens_per_minute
        },
        cache=ResponseCache(store, ttl_s=config.cache.ttl_s) if config.cache.enabled else None,
        balancer=Balancer(
            {
                Tier.LOCAL: config.balancing.local,
                Tier.EDGE: config.balancing.edge,
                Tier.CLOUD: config.balancing.cloud,
            },
            latency,
        ),
        latency=latency,
        deadline_s=config.request_timeout_s,
    )


def _limiter(spec: ModelSpec) -> RateLimiter:
    limit = RateLimit(
        requests_per_minute=spec.requests_per_minute,
        tokens_per_minute=spec.tokens_per_minute,
        when_limited=spec.when_limited,
        queue_size=spec.limit_queue_size,
    )
    return RateLimiter(spec.name, limit)
