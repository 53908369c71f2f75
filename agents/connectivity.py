"""The connectivity agent: which remote tiers can we reach right now?"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from urllib.parse import urlparse

from orchestra import ALL_TIERS, Agent, AgentContext, ModelSpec, Request, Tier, Verdict

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


@dataclass(frozen=True)
class Probe:
    host: str
    port: int
    tier: Tier


@dataclass(frozen=True)
class ProbeResult:
    probe: Probe
    ok: bool
    ms: float
    error: str = ""


def probe_for(spec: ModelSpec) -> Probe | None:
    """The TCP endpoint behind a remote model, or None when it cannot be known."""
    if spec.api_base:
        url = urlparse(spec.api_base)
        if not url.hostname:
            return None
        port = url.port or (443 if url.scheme == "https" else 80)
        return Probe(url.hostname, port, spec.tier)
    host = PROVIDER_HOSTS.get(spec.litellm_model.partition("/")[0])
    return Probe(host, 443, spec.tier) if host else None


class ConnectivityAgent(Agent):
    """Probes the endpoints of the remote (edge and cloud) models with async TCP connects.

    A tier whose every endpoint fails is disallowed: `offline` when no remote endpoint answers
    (local only), `degraded` when some tier is unreachable, `connected` otherwise. Each probe has
    a hard deadline (DNS included), so a dead network never stalls a sample.
    """

    name = "connectivity"

    def __init__(self, interval: float = 5.0, probe_timeout_s: float = 1.0) -> None:
        self.interval = interval
        self.probe_timeout_s = probe_timeout_s
        self.timeout_s = probe_timeout_s + 0.5
        self._probes: list[Probe] = []

    async def start(self, context: AgentContext) -> None:
        remote = [m for m in context.catalog if m.tier is not Tier.LOCAL]
        self._probes = list(dict.fromkeys(p for m in remote if (p := probe_for(m))))

    async def check(self, request: Request | None) -> Verdict:
        results = await asyncio.gather(*(self._probe(p) for p in self._probes))
        return self.judge(list(results))

    def judge(self, results: list[ProbeResult]) -> Verdict:
        """The verdict for one round of probes (pure)."""
        metrics = {
            f"{r.probe.host}:{r.probe.port}": (round(r.ms, 1) if r.ok else r.error) for r in results
        }
        if not results:
            return self.verdict(
                confidence=0.0, state="local_only", reason="no remote endpoint to probe",
                metrics=metrics,
            )  # fmt: skip
        tiers = {r.probe.tier for r in results}
        down = {t for t in tiers if not any(r.ok for r in results if r.probe.tier is t)}
        allowed = frozenset(ALL_TIERS - down)
        if not down:
            return self.verdict(
                confidence=0.0, state="connected", reason="every remote tier reachable",
                metrics=metrics,
            )  # fmt: skip
        state = "offline" if down == tiers else "degraded"
        names = ", ".join(sorted(str(t) for t in down))
        return self.verdict(
            target=Tier.LOCAL if state == "offline" else None,
            allowed=allowed,
            confidence=0.6,
            state=state,
            reason=f"{names} unreachable",
            metrics=metrics,
        )

    async def _probe(self, probe: Probe) -> ProbeResult:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.probe_timeout_s):
                _, writer = await asyncio.open_connection(probe.host, probe.port)
        except TimeoutError:
            return ProbeResult(probe, False, _ms(started), "timeout")
        except OSError as exc:
            return ProbeResult(probe, False, _ms(started), type(exc).__name__)
        writer.close()
        return ProbeResult(probe, True, _ms(started))


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
