"""Periodic cheap health checks of local and edge endpoints (never of cloud APIs).

Each probe is a GET that costs no tokens: `{origin}/health`, `{api_base}/models`, and for
Ollama `{origin}/api/tags`. Any 2xx answer means healthy. Probes run concurrently, each endpoint
within a hard timeout, so a hung server costs one timeout and never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from orchestra.core.model_spec import ModelSpec
from orchestra.core.tier import Tier
from orchestra.execution.balancing import LatencyTracker

if TYPE_CHECKING:  # httpx is imported at the first check: a local-only run never needs it
    import httpx

log = logging.getLogger("orchestra.health")

_PROBED_TIERS = frozenset({Tier.LOCAL, Tier.EDGE})


class HealthConfig(BaseModel):
    """`[health]`: periodic cheap checks of local and edge endpoints."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    interval_s: float = Field(default=30.0, gt=0.0)
    timeout_s: float = Field(default=2.0, gt=0.0)


@dataclass(frozen=True, kw_only=True, slots=True)
class HealthStatus:
    """The last check of one model's endpoint. `healthy` is None until it was first checked."""

    healthy: bool | None = None
    latency_ms: float | None = None
    checked_at: float | None = None
    error: str | None = None


UNCHECKED = HealthStatus()


def is_probed(spec: ModelSpec) -> bool:
    """Local and edge models reached over HTTP; not the embedded model, not the cloud."""
    return spec.tier in _PROBED_TIERS and spec.api_base is not None and not spec.embedded


def probe_urls(spec: ModelSpec) -> tuple[str, ...]:
    """The URLs to try, in order, for one spec (empty if it is not probed)."""
    if not is_probed(spec) or spec.api_base is None:
        return ()
    base = spec.api_base.rstrip("/")
    parts = urlsplit(base)
    origin = f"{parts.scheme}://{parts.netloc}"
    urls = [f"{origin}/health", f"{base}/models"]
    if spec.litellm_model.startswith("ollama"):
        # Ollama answers neither of the above; its tag list is the cheap call, so it goes first.
        urls.insert(0, f"{origin}/api/tags")
    return tuple(dict.fromkeys(urls))  # drop duplicates, keep order


class HealthChecker:
    """Probes every local/edge endpoint each `interval_s` and keeps each model's last status.

    A healthy probe's latency (of the answering GET) is fed to `latency`, if given. Note that a
    probe is far cheaper than a completion: share a tracker with the balancer only if every
    model of a tier is probed alike, or the probed ones will look faster than the rest.
    """

    def __init__(
        self,
        specs: Sequence[ModelSpec],
        interval_s: float = 30,
        timeout_s: float = 2,
        latency: LatencyTracker | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if interval_s <= 0 or timeout_s <= 0:
            raise ValueError("interval_s and timeout_s must be > 0")
        self.specs = tuple(s for s in specs if is_probed(s))
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.latency = latency
        self._clock = clock
        self._status: dict[str, HealthStatus] = {}
        self._down: frozenset[str] = frozenset()
        self._task: asyncio.Task[None] | None = None

    def watch(self, specs: Iterable[ModelSpec]) -> None:
        """Probe these models from the next round on (the catalog changed); the statuses of
        models no longer watched are forgotten."""
        self.specs = tuple(s for s in specs if is_probed(s))
        names = {s.name for s in self.specs}
        self._status = {n: st for n, st in self._status.items() if n in names}
        self._note_down()

    def status(self, model: str) -> HealthStatus:
        return self._status.get(model, UNCHECKED)

    @property
    def down(self) -> frozenset[str]:
        """The models whose last check failed."""
        return self._down

    def _note_down(self) -> None:
        self._down = frozenset(n for n, st in self._status.items() if st.healthy is False)

    def statuses(self) -> dict[str, HealthStatus]:
        return dict(self._status)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def check_once(self) -> dict[str, HealthStatus]:
        """Probe every endpoint once, concurrently; returns the new statuses."""
        specs = self.specs  # `watch` may change them during the round
        if not specs:
            return {}
        import httpx

        # trust_env=False: a LAN or localhost probe must not go through a proxy from the env.
        async with httpx.AsyncClient(
            trust_env=False, timeout=self.timeout_s, follow_redirects=False
        ) as client:
            results = await asyncio.gather(*(self._check(client, s) for s in specs))
        fresh = {spec.name: status for spec, status in zip(specs, results, strict=True)}
        watched = {s.name for s in self.specs}
        self._status.update({n: st for n, st in fresh.items() if n in watched})
        self._note_down()
        return fresh

    async def start(self) -> None:
        """Check now and then every `interval_s`, in a background task. A no-op if running."""
        if self.running:
            return
        self._task = asyncio.create_task(self._run(), name="orchestra-health")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def __aenter__(self) -> HealthChecker:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _run(self) -> None:
        while True:
            try:
                await self.check_once()
            except Exception:  # a bad round must not end the checks
                log.exception("health: a check round failed")
            await asyncio.sleep(self.interval_s)

    async def _check(self, client: httpx.AsyncClient, spec: ModelSpec) -> HealthStatus:
        try:
            # The client timeout bounds each phase of one GET; this bounds the whole probe.
            async with asyncio.timeout(self.timeout_s):
                latency_ms, error = await self._probe(client, probe_urls(spec))
        except TimeoutError:
            latency_ms, error = None, f"no answer within {self.timeout_s:g}s"
        if latency_ms is not None and self.latency is not None:
            self.latency.observe(spec.name, latency_ms)
        return HealthStatus(
            healthy=latency_ms is not None,
            latency_ms=latency_ms,
            checked_at=self._clock(),
            error=error,
        )

    async def _probe(
        self, client: httpx.AsyncClient, urls: Sequence[str]
    ) -> tuple[float | None, str | None]:
        """(latency of the first 2xx GET, None), or (None, why the last URL failed)."""
        import httpx

        error = "no probe URL"
        for url in urls:
            started = time.perf_counter()
            try:
                response = await client.get(url)
            except httpx.TimeoutException:
                return None, f"no answer within {self.timeout_s:g}s from {url}"
            except httpx.TransportError as exc:
                # Every URL shares the origin: if it cannot be reached, none of them can.
                return None, f"{type(exc).__name__} from {url}: {exc}"
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                error = f"{type(exc).__name__} from {url}: {exc}"
                continue
            if response.is_success:
                return (time.perf_counter() - started) * 1000.0, None
            error = f"HTTP {response.status_code} from {url}"
        return None, error
