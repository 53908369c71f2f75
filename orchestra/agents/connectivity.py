"""The connectivity agent: which remote tiers can we reach right now, and how well?

Every `interval` (5 s) it probes the endpoint of each edge and cloud model (from `api_base`, else
the provider's known host) plus any `extra_hosts`, all concurrently and each under a hard
deadline (`probe_timeout_s`, 1 s, DNS included):

- DNS: resolved off the loop with its own deadline (`dns_timeout_s`, 0.5 s) and cached for
  `dns_ttl_s` (60 s); at most one lookup per host is ever outstanding.
- TCP connect to the resolved address: its time is the endpoint's *latency*.
- HTTP GET of the base URL's origin (any status counts as reachable) on the first probe, every
  `http_every`-th probe (3) and every probe while the last one failed: it proves the service
  answers, times the response (*http latency*) and, when the body is large enough, estimates
  *throughput*. `extra_hosts` ("host:port") are TCP-only and count as the cloud tier.

Per endpoint over the last `window` probes (10): latency EWMA, p50/p95 and jitter, loss, http
latency, throughput. An endpoint is `down` when its latest probe failed, `degraded` when loss >
`degraded_loss` (10 %), latency EWMA > `degraded_latency_ms` (200 ms), http EWMA >
`degraded_http_ms` (1000 ms) or median throughput < `degraded_bandwidth_mbps` (5 Mbps). A tier is as
good as its best endpoint. States: `connected`; `degraded` (a tier down or degraded: down tiers are
disallowed, and unless the cloud is healthy it votes EDGE, or LOCAL when edge is not healthy too);
`offline` (every probed tier down in the latest round: LOCAL only); `local_only` (nothing remote).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from orchestra.agents.base import Agent
from orchestra.agents.context import AgentContext
from orchestra.core.dns import first_listening, resolve_in_thread
from orchestra.core.loop_lag import LoopLag
from orchestra.core.model_spec import ModelSpec
from orchestra.core.request import Request
from orchestra.core.tier import ALL_TIERS, Tier
from orchestra.core.verdict import Verdict

if TYPE_CHECKING:  # httpx is imported with the first endpoint to probe: none when all is local
    import httpx

log = logging.getLogger("orchestra.agents.connectivity")

# Where a provider's API lives when a model has no api_base of its own.
PROVIDER_HOSTS = {
    "openai": "api.openai.com",
    "anthropic": "api.anthropic.com",
    "gemini": "generativelanguage.googleapis.com",
    "groq": "api.groq.com",
    "mistral": "api.mistral.ai",
    "deepseek": "api.deepseek.com",
    "openrouter": "openrouter.ai",
    "together_ai": "api.together.xyz",
}

CONNECTED, DEGRADED, OFFLINE, LOCAL_ONLY = "connected", "degraded", "offline", "local_only"
DOWN = "down"  # an endpoint's or a tier's state, never the verdict's
_RANK = {CONNECTED: 0, DEGRADED: 1, DOWN: 2}

# Throughput from fewer bytes than this is latency, not bandwidth: reported as unknown.
MIN_THROUGHPUT_BYTES = 16 * 1024
# The HTTP probe reads at most this much body, so a large landing page stays cheap.
MAX_BODY_BYTES = 256 * 1024
# check() gets this much on top of the probe deadline for gathering and judging.
CHECK_MARGIN_S = 0.5
# The event loop ran this late (or a tenth of the probe's deadline, if more) during a round: its
# timeouts are inconclusive. A loop that serves well runs its timers a few ms late at most.
MIN_BUSY_LAG_S = 0.05


class DnsPending(Exception):
    """The host's previous lookup has not returned yet; this probe counts as failed."""


Resolver = Callable[[str, int], Awaitable[list[str]]]


@dataclass(frozen=True)
class Probe:
    """One remote endpoint; `scheme` ("http"/"https") enables the HTTP step, None is TCP-only."""

    host: str
    port: int
    tier: Tier
    scheme: str | None = None

    @property
    def key(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ProbeResult:
    """One probe: `ms` is the TCP connect time; `http_ms`/`bytes_per_s` when the HTTP step ran."""

    probe: Probe
    ok: bool
    ms: float
    error: str = ""
    http_ms: float | None = None
    bytes_per_s: float | None = None
    # The probe failed, but a real call to the endpoint answered meanwhile: it is reachable
    # (a busy event loop, or a provider slow to accept while it serves, fails a probe's
    # deadline while the calls get through), and this result carries no timing.
    passive: bool = False


def probe_for(spec: ModelSpec) -> Probe | None:
    """The endpoint behind a remote model, or None when it cannot be known."""
    if spec.api_base:
        url = urlparse(spec.api_base)
        if not url.hostname:
            return None
        scheme = url.scheme if url.scheme in ("http", "https") else None
        port = url.port or (443 if url.scheme == "https" else 80)
        return Probe(url.hostname, port, spec.tier, scheme)
    host = PROVIDER_HOSTS.get(spec.litellm_model.partition("/")[0])
    return Probe(host, 443, spec.tier, "https") if host else None


def parse_host_port(text: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' → (host, port); ValueError otherwise."""
    url = urlparse(f"//{text}")
    try:
        port = url.port
    except ValueError as exc:
        raise ValueError(f"extra_hosts entry {text!r}: {exc}") from None
    if not url.hostname or port is None or not 0 < port < 65536:
        raise ValueError(f"extra_hosts entry {text!r} must be 'host:port'")
    return url.hostname, port


class ConnectivityAgent(Agent):
    """Probes edge and cloud endpoints (DNS, TCP, HTTP) and judges each tier's reachability.

    States: connected, degraded, offline, local_only; see the module docstring for what is
    measured and the defaults. `judge` is pure: probe history in, verdict out.
    """

    name = "connectivity"

    def __init__(
        self,
        *,
        interval: float = 5.0,
        probe_timeout_s: float = 1.0,
        dns_timeout_s: float = 0.5,
        dns_ttl_s: float = 60.0,
        window: int = 10,
        http_every: int = 3,
        ewma_alpha: float = 0.3,
        degraded_latency_ms: float = 200.0,
        degraded_http_ms: float = 1000.0,
        degraded_loss: float = 0.10,
        degraded_bandwidth_mbps: float = 5.0,
        extra_hosts: Sequence[str] = (),
    ) -> None:
        self.interval = _positive("interval", interval)
        self.probe_timeout_s = _positive("probe_timeout_s", probe_timeout_s)
        self.dns_timeout_s = _positive("dns_timeout_s", dns_timeout_s)
        if self.dns_timeout_s > self.probe_timeout_s:
            raise ValueError("dns_timeout_s must not exceed probe_timeout_s")
        self.dns_ttl_s = _number("dns_ttl_s", dns_ttl_s, low=0.0)
        self.window = _integer("window", window, low=1)
        self.http_every = _integer("http_every", http_every, low=0)
        self.ewma_alpha = _number("ewma_alpha", ewma_alpha, low=0.0, high=1.0)
        if self.ewma_alpha == 0:
            raise ValueError("ewma_alpha must be > 0")
        self.degraded_latency_ms = _positive("degraded_latency_ms", degraded_latency_ms)
        self.degraded_http_ms = _positive("degraded_http_ms", degraded_http_ms)
        self.degraded_loss = _number("degraded_loss", degraded_loss, low=0.0, high=1.0)
        self.degraded_bandwidth_mbps = _number(
            "degraded_bandwidth_mbps", degraded_bandwidth_mbps, low=0.0
        )
        if isinstance(extra_hosts, str) or not all(isinstance(h, str) for h in extra_hosts):
            raise ValueError("extra_hosts must be a list of 'host:port' strings")
        self.extra_hosts = tuple(extra_hosts)
        self._extra = [Probe(*parse_host_port(h), Tier.CLOUD) for h in self.extra_hosts]
        # Every probe finishes by its deadline; the margin covers gather and judge.
        self.timeout_s = self.probe_timeout_s + CHECK_MARGIN_S
        self._probes: list[Probe] = list(dict.fromkeys(self._extra))
        self._history: dict[Probe, deque[ProbeResult]] = {}
        self._rounds: dict[Probe, int] = {}
        self._http_failed: set[Probe] = set()
        self._dns_cache: dict[str, tuple[float, list[str]]] = {}
        self._dns_pending: dict[str, asyncio.Future[list[str]]] = {}
        self._client: httpx.AsyncClient | None = None
        self.last_bandwidth_mbps: float | None = None
        self._models: dict[Probe, list[str]] = {}  # the catalog's models behind each endpoint
        self._answered_at: Callable[[str], float | None] = lambda model: None
        # Tests swap this for a lookup that never returns; production uses a daemon thread.
        self.resolver: Resolver = resolve_in_thread

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, context: AgentContext) -> None:
        await self.catalog_changed(context)

    async def catalog_changed(self, context: AgentContext) -> None:
        """Probe the remote endpoints of the (new) catalog; what was learnt of those still in
        it is kept."""
        remote = [m for m in context.catalog if m.tier is not Tier.LOCAL]
        found = [(p, m.name) for m in remote if (p := probe_for(m))]
        self._probes = list(dict.fromkeys([*(p for p, _ in found), *self._extra]))
        self._models = {}
        for p, name in found:
            self._models.setdefault(p, []).append(name)
        self._answered_at = context.answered_at
        self._history = {p: h for p, h in self._history.items() if p in self._probes}
        if self._client is None and any(p.scheme for p in self._probes):
            # Loading the CA bundle takes ~100 ms of CPU: off the loop, once.
            self._client = await asyncio.to_thread(self._new_client)

    def _new_client(self) -> httpx.AsyncClient:
        import httpx

        # No keep-alive: a pooled connection could outlive a network change and hang, and a
        # fresh one measures what a new request costs. No proxies from the environment.
        return httpx.AsyncClient(
            trust_env=False,
            timeout=self.probe_timeout_s,
            follow_redirects=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    async def stop(self) -> None:
        for future in self._dns_pending.values():
            future.cancel()  # stops the waiting only; a stuck lookup thread is a daemon
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    # -- sampling --------------------------------------------------------------------------

    async def check(self, request: Request | None) -> Verdict:
        # A real call that answered from shortly before this round on proves its endpoint
        # reachable, whatever the probe says; an older answer proves nothing of now.
        since = time.monotonic() - self.probe_timeout_s
        async with LoopLag() as lag:
            results = await asyncio.gather(*(self.probe(p) for p in self._probes))
        # A deadline missed while the event loop ran late (thousands of calls in flight, a
        # blocking callback) measured the loop, not the network: such a probe proves nothing,
        # and the endpoint keeps what its earlier probes showed. A refusal, a DNS failure, a
        # reset are the network's answers, whatever the loop.
        busy = lag.worst_s > max(MIN_BUSY_LAG_S, self.probe_timeout_s / 10)
        for result in results:
            if not result.ok and self._answered_since(result.probe, since):
                result = ProbeResult(result.probe, True, result.ms, passive=True)
            elif not result.ok and busy and result.error.endswith("_timeout"):
                log.debug(
                    "connectivity: %s: %s with the event loop %.0f ms late: inconclusive",
                    result.probe.key, result.error, lag.worst_s * 1000,
                )  # fmt: skip
                continue
            history = self._history.setdefault(result.probe, deque(maxlen=self.window))
            history.append(result)
        verdict = self.judge(r for h in self._history.values() for r in h)
        if self.last_bandwidth_mbps is not None:
            metrics = {**verdict.metrics, "speedtest_mbps": round(self.last_bandwidth_mbps, 2)}
            verdict = verdict.model_copy(update={"metrics": metrics})
        return verdict

    async def probe(self, probe: Probe) -> ProbeResult:
        """DNS, TCP connect and (when due) HTTP for one endpoint, all under one hard deadline."""
        import httpx

        self._rounds[probe] = round_no = self._rounds.get(probe, 0) + 1
        due = probe.scheme is not None and (
            probe in self._http_failed
            or (self.http_every > 0 and (round_no - 1) % self.http_every == 0)
        )
        started = time.perf_counter()
        stage, connect_ms = "dns", 0.0
        try:
            async with asyncio.timeout(self.probe_timeout_s):
                addresses = await self._resolve(probe.host, probe.port)
                stage = "tcp"
                address = await first_listening(addresses, probe.port)
                connect_ms = _ms(started)
                if not due:
                    return ProbeResult(probe, True, connect_ms)
                stage = "http"
                http_ms, rate = await self._http(probe, address)
        except TimeoutError:
            return self._failed(probe, due, started, f"{stage}_timeout")
        except DnsPending:
            return self._failed(probe, due, started, "dns_pending")
        except (OSError, httpx.HTTPError) as exc:
            return self._failed(probe, due, started, f"{stage}_{_error_name(exc)}")
        self._http_failed.discard(probe)
        return ProbeResult(probe, True, connect_ms, http_ms=http_ms, bytes_per_s=rate)

    def _answered_since(self, probe: Probe, since: float) -> bool:
        """Whether a real call to one of `probe`'s models answered at or after `since`."""
        return any(
            (at := self._answered_at(name)) is not None and at >= since
            for name in self._models.get(probe, ())
        )

    def _failed(self, probe: Probe, due: bool, started: float, error: str) -> ProbeResult:
        if due:  # keep probing HTTP every round until it answers, so recovery shows at once
            self._http_failed.add(probe)
        return ProbeResult(probe, False, _ms(started), error)

    async def _resolve(self, host: str, port: int) -> list[str]:
        with contextlib.suppress(ValueError):
            return [str(ipaddress.ip_address(host))]
        now = time.monotonic()
        cached = self._dns_cache.get(host)
        if cached and cached[0] > now:
            return cached[1]
        pending = self._dns_pending.get(host)
        if pending is not None and not pending.done():
            # A lookup thread cannot be cancelled: never stack a second one behind a stuck one.
            raise DnsPending(host)
        future = asyncio.ensure_future(self.resolver(host, port))
        self._dns_pending[host] = future
        future.add_done_callback(lambda f: self._resolved(host, f))
        async with asyncio.timeout(self.dns_timeout_s):
            # Shielded: timing out here must not forget the lookup still running.
            return await asyncio.shield(future)

    def _resolved(self, host: str, future: asyncio.Future[list[str]]) -> None:
        if self._dns_pending.get(host) is future:
            del self._dns_pending[host]
        if not future.cancelled() and future.exception() is None and future.result():
            self._dns_cache[host] = (time.monotonic() + self.dns_ttl_s, future.result())

    async def _http(self, probe: Probe, address: str) -> tuple[float, float | None]:
        """GET the origin at the resolved address: (ms to response headers, body bytes/s)."""
        assert probe.scheme is not None
        if self._client is None:
            self._client = self._new_client()
        default_port = 443 if probe.scheme == "https" else 80
        shown = f"[{address}]" if ":" in address else address
        host = f"[{probe.host}]" if ":" in probe.host else probe.host
        headers = {"Host": host if probe.port == default_port else f"{host}:{probe.port}"}
        # Connecting to the address we resolved keeps httpx from its own, uncancellable lookup.
        extensions = {"sni_hostname": probe.host} if probe.scheme == "https" else {}
        started = time.perf_counter()
        url = f"{probe.scheme}://{shown}:{probe.port}/"
        async with self._client.stream("GET", url, headers=headers, extensions=extensions) as resp:
            at_headers = time.perf_counter()
            size = 0
            async for chunk in resp.aiter_raw():
                size += len(chunk)
                if size >= MAX_BODY_BYTES:
                    break
            elapsed = time.perf_counter() - at_headers
        rate = size / elapsed if size >= MIN_THROUGHPUT_BYTES and elapsed > 0 else None
        return (at_headers - started) * 1000, rate

    async def measure_bandwidth(self) -> float | None:
        """Download Mbps from speedtest.net (needs the internet; only on explicit request).

        Needs the optional `speedtest-cli` package; returns None (and logs why) without it or on
        any failure. Never called by `check`; the last value is reported as `speedtest_mbps`.
        """
        try:
            import speedtest
        except ImportError:
            log.info("speedtest-cli is not installed: pip install 'orchestra[speedtest]'")
            return None

        def run() -> float:
            tester = speedtest.Speedtest(secure=True)
            tester.get_best_server()
            return float(tester.download()) / 1e6

        try:
            self.last_bandwidth_mbps = await asyncio.to_thread(run)
        except Exception as exc:  # speedtest raises many types; any failure means "unknown"
            log.warning("speedtest failed: %s: %s", type(exc).__name__, exc)
            return None
        return self.last_bandwidth_mbps

    # -- judging (pure) --------------------------------------------------------------------

    def judge(self, results: Iterable[ProbeResult]) -> Verdict:
        """The verdict for a probe history (oldest first; the last `window` per endpoint count)."""
        by_probe: dict[Probe, deque[ProbeResult]] = {}
        for r in results:
            by_probe.setdefault(r.probe, deque(maxlen=self.window)).append(r)
        if not by_probe:
            return self.verdict(
                confidence=0.0, state=LOCAL_ONLY, reason="no remote endpoint to probe"
            )
        endpoints = {p: self._endpoint(list(h)) for p, h in by_probe.items()}
        tiers = _tier_summaries(endpoints)
        metrics = {
            "tiers": {str(t): m for t, m in tiers.items()},
            "endpoints": {p.key: m for p, m in endpoints.items()},
        }
        down = {t for t, m in tiers.items() if m["state"] == DOWN}
        weak = {t for t, m in tiers.items() if m["state"] == DEGRADED}
        if down == set(tiers):
            names = ", ".join(str(t) for t in sorted(down))
            # No network: a remote tier without a probed endpoint is no more reachable.
            return self.verdict(
                target=Tier.LOCAL,
                allowed=frozenset({Tier.LOCAL}),
                confidence=0.9,
                state=OFFLINE,
                reason=f"no remote endpoint answered ({names} unreachable)",
                metrics=metrics,
            )
        if not down and not weak:
            return self.verdict(
                confidence=0.0, state=CONNECTED, reason="every remote tier reachable",
                metrics=metrics,
            )  # fmt: skip
        return self._degraded(tiers, down, weak, metrics)

    def _degraded(
        self,
        tiers: dict[Tier, dict[str, Any]],
        down: set[Tier],
        weak: set[Tier],
        metrics: dict[str, Any],
    ) -> Verdict:
        """The verdict when some probed tiers are down or degraded (but not all down)."""
        parts = [f"{', '.join(str(t) for t in sorted(down))} unreachable"] if down else []
        parts += [f"{t} degraded ({'; '.join(tiers[t]['why'])})" for t in sorted(weak)]

        def healthy(tier: Tier) -> bool:
            return tier in tiers and tiers[tier]["state"] == CONNECTED

        # A healthy cloud means the trouble is only on the LAN: no vote, the constraint suffices.
        target = None if healthy(Tier.CLOUD) else Tier.EDGE if healthy(Tier.EDGE) else Tier.LOCAL
        return self.verdict(
            target=target,
            allowed=frozenset(ALL_TIERS - down),
            confidence=0.0 if target is None else 0.5,
            state=DEGRADED,
            reason="; ".join(parts),
            metrics=metrics,
        )

    def _endpoint(self, history: list[ProbeResult]) -> dict[str, Any]:
        """Metrics and state of one endpoint from its recent probes (oldest first)."""
        last = history[-1]
        lat = [r.ms for r in history if r.ok and not r.passive]
        http = [r.http_ms for r in history if r.ok and r.http_ms is not None]
        rates = [r.bytes_per_s for r in history if r.ok and r.bytes_per_s is not None]
        loss = sum(not r.ok for r in history) / len(history)
        ewma_ms = _ewma(lat, self.ewma_alpha)
        http_ms = _ewma(http, self.ewma_alpha)
        mbps = _percentile(rates, 0.5) * 8 / 1e6 if rates else None
        if last.ok:
            why = self._degradations(loss, ewma_ms, http_ms, mbps)
            state = DEGRADED if why else CONNECTED
        else:
            state, why = DOWN, [last.error or "probe failed"]
        return {
            "state": state,
            "tier": str(last.probe.tier),
            "error": last.error,
            "why": why,
            "samples": len(history),
            "loss": round(loss, 3),
            "last_ms": _round(last.ms if last.ok and not last.passive else None),
            "passive": last.passive,
            "ewma_ms": _round(ewma_ms),
            **_spread(lat),
            "http_ms": _round(http_ms),
            "throughput_mbps": _round(mbps),
        }

    def _degradations(
        self, loss: float, ewma_ms: float | None, http_ms: float | None, mbps: float | None
    ) -> list[str]:
        """Why a reachable endpoint counts as degraded: one entry per threshold it crosses."""
        why: list[str] = []
        if loss > self.degraded_loss:
            why.append(f"loss {loss:.0%} > {self.degraded_loss:.0%}")
        if ewma_ms is not None and ewma_ms > self.degraded_latency_ms:
            why.append(f"latency {ewma_ms:.0f} ms > {self.degraded_latency_ms:g} ms")
        if http_ms is not None and http_ms > self.degraded_http_ms:
            why.append(f"http {http_ms:.0f} ms > {self.degraded_http_ms:g} ms")
        if mbps is not None and mbps < self.degraded_bandwidth_mbps:
            why.append(f"throughput {mbps:.1f} Mbps < {self.degraded_bandwidth_mbps:g} Mbps")
        return why


# -- helpers ------------------------------------------------------------------------------


def _tier_summaries(endpoints: dict[Probe, dict[str, Any]]) -> dict[Tier, dict[str, Any]]:
    """Per tier (in tier order): its best endpoint's metrics, with endpoint and reachable counts."""
    tiers: dict[Tier, dict[str, Any]] = {}
    for tier in sorted({p.tier for p in endpoints}):
        mine = [m for p, m in endpoints.items() if p.tier is tier]
        best = min(mine, key=lambda m: (_RANK[m["state"]], _or_inf(m["ewma_ms"])))
        reachable = sum(m["state"] != DOWN for m in mine)
        tiers[tier] = {**best, "endpoints": len(mine), "reachable": reachable}
    return tiers


def _spread(lat: Sequence[float]) -> dict[str, float | None]:
    """p50, p95 and jitter of the successful probes' latencies (None without samples)."""
    return {
        "p50_ms": _round(_percentile(lat, 0.5) if lat else None),
        "p95_ms": _round(_percentile(lat, 0.95) if lat else None),
        "jitter_ms": _round(_jitter(lat)),
    }


def _ewma(values: Sequence[float], alpha: float) -> float | None:
    if not values:
        return None
    avg = values[0]
    for v in values[1:]:
        avg += alpha * (v - avg)
    return avg


def _percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (monotone: raising any sample never lowers it)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _jitter(values: Sequence[float]) -> float | None:
    if len(values) < 2:
        return None
    return sum(abs(b - a) for a, b in pairwise(values)) / (len(values) - 1)


def _error_name(exc: Exception) -> str:
    """The exception's type, or its errno name for a bare OSError (ENETUNREACH, EHOSTUNREACH)."""
    if type(exc) is OSError and isinstance(exc.errno, int):
        return errno.errorcode.get(exc.errno, "OSError")
    return type(exc).__name__


def _or_inf(value: float | None) -> float:
    return math.inf if value is None else value


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _number(name: str, value: Any, *, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}, got {value!r}")
    return float(value)


def _positive(name: str, value: Any) -> float:
    number = _number(name, value, low=0.0)
    if number <= 0 or math.isinf(number):
        raise ValueError(f"{name} must be a positive number of seconds/ms, got {value!r}")
    return number


def _integer(name: str, value: Any, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value
