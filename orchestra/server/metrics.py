"""Prometheus metrics: what happened (counters, histograms) and how things stand (gauges read at
each scrape: spend, budget, breakers, agents, health).

Written with `prometheus_client` (pure Python, no dependencies, ~10 ms to import, only by the
server) rather than by hand, for one reason: with `--workers N` a scrape reaches one worker, and
its multiprocess mode (the CLI sets `PROMETHEUS_MULTIPROC_DIR` for N > 1) adds up every worker's
counters, which per-process counters written by hand could not. Its exposition is also exact
(escaping, `+Inf` buckets, `_total` suffixes), and its parser checks ours in the tests.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector

from orchestra.core.verdict import Verdict

# The classic text format: every name here is a legacy one, and every Prometheus reads it.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
BREAKER_STATES = ("closed", "open", "half_open")
NONE = "none"  # the tier and model label of a request that no model answered
# LLM calls take from milliseconds (a cache hit, a small local model) to minutes.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, float("inf"))


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """How things stand at a scrape: read from the runtime (and its store) just before."""

    spend_today_usd: float
    spend_month_usd: float
    reserved_usd: float
    daily_budget_usd: float | None
    monthly_budget_usd: float | None
    breakers: Mapping[str, str]  # every catalog model: closed, open or half_open
    tiers: Mapping[str, str]  # every catalog model's tier
    healthy: Mapping[str, bool]  # the models health checks have probed
    agents: tuple[Verdict, ...] = field(default=())


class Metrics:
    """The server's metrics. In multiprocess mode the counters live in files shared by the
    workers (read back at each scrape); otherwise in this object's own registry, so several
    apps in one process (tests) never collide."""

    def __init__(self) -> None:
        # No `_created` series: nobody here reads them, and they double every counter's lines.
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self.registry = CollectorRegistry()
        reg = None if self.multiprocess else self.registry
        by_model = ["tier", "model"]
        self.requests = Counter(
            "orchestra_requests", "Chat completion requests, by who answered and how it ended",
            [*by_model, "status", "stream"], registry=reg,
        )  # fmt: skip
        self.latency = Histogram(
            "orchestra_request_duration_seconds",
            "Time to the whole answer (recorded), by who answered",
            by_model, buckets=LATENCY_BUCKETS, registry=reg,
        )  # fmt: skip
        self.first_token = Histogram(
            "orchestra_time_to_first_token_seconds", "Streams: time to the first text",
            by_model, buckets=LATENCY_BUCKETS, registry=reg,
        )  # fmt: skip
        self.tokens = Counter(
            "orchestra_tokens", "Tokens of answered requests", [*by_model, "kind"], registry=reg
        )
        self.cost = Counter(
            "orchestra_cost_usd", "Cost of answered requests (USD)", by_model, registry=reg
        )
        self.in_flight = Gauge(
            "orchestra_requests_in_flight", "Chat completion requests being answered",
            registry=reg, multiprocess_mode="livesum",
        )  # fmt: skip

    def answered(
        self,
        tier: str,
        model: str,
        seconds: float,
        *,
        stream: bool,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float,
    ) -> None:
        self.requests.labels(tier, model, "ok", _flag(stream)).inc()
        self.latency.labels(tier, model).observe(seconds)
        self.tokens.labels(tier, model, "prompt").inc(prompt_tokens)
        self.tokens.labels(tier, model, "completion").inc(completion_tokens)
        if cost_usd > 0:
            self.cost.labels(tier, model).inc(cost_usd)

    def failed(self, status: str, *, stream: bool, tier: str = NONE, model: str = NONE) -> None:
        """A request that ended without a recorded answer; `status` is its error code."""
        self.requests.labels(tier, model, status, _flag(stream)).inc()

    def exposition(self, now: Snapshot) -> bytes:
        """Every metric in Prometheus's text format (version 0.0.4)."""
        if self.multiprocess:
            counters = CollectorRegistry()
            MultiProcessCollector(counters)  # type: ignore[no-untyped-call]
        else:
            counters = self.registry
        live = CollectorRegistry()
        live.register(_Live(now))
        return generate_latest(counters) + generate_latest(live)


class _Live:
    """The gauges of one snapshot, as a collector for one scrape."""

    def __init__(self, now: Snapshot) -> None:
        self.now = now

    def collect(self) -> Iterator[Metric]:
        n = self.now
        spend = GaugeMetricFamily(
            "orchestra_spend_usd", "Spend in the budget's calendar (the ledger)", labels=["period"]
        )
        spend.add_metric(["today"], n.spend_today_usd)
        spend.add_metric(["month"], n.spend_month_usd)
        yield spend
        yield GaugeMetricFamily(
            "orchestra_reserved_usd", "Budget held by calls in flight", value=n.reserved_usd
        )
        budget = GaugeMetricFamily("orchestra_budget_usd", "The budget", labels=["period"])
        for period, usd in (("day", n.daily_budget_usd), ("month", n.monthly_budget_usd)):
            if usd is not None:
                budget.add_metric([period], usd)
        yield budget
        breaker = GaugeMetricFamily(
            "orchestra_breaker_state",
            "Each model's circuit breaker: 1 for its state, 0 for the others",
            labels=["model", "tier", "state"],
        )
        for model, now_in in n.breakers.items():
            for s in BREAKER_STATES:
                breaker.add_metric([model, n.tiers.get(model, NONE), s], float(s == now_in))
        yield breaker
        healthy = GaugeMetricFamily(
            "orchestra_model_healthy", "The last health check of a model: 1 up, 0 down",
            labels=["model"],
        )  # fmt: skip
        for model, up in n.healthy.items():
            healthy.add_metric([model], float(up))
        yield healthy
        state = GaugeMetricFamily(
            "orchestra_agent_state", "Each agent's current state (1)", labels=["agent", "state"]
        )
        confidence = GaugeMetricFamily(
            "orchestra_agent_confidence", "Each agent's confidence in its vote", labels=["agent"]
        )
        for v in n.agents:
            state.add_metric([v.agent, v.state], 1.0)
            confidence.add_metric([v.agent], v.confidence)
        yield state
        yield confidence


def _flag(value: bool) -> str:
    return "true" if value else "false"
