"""The resource agent: can this machine run a local model right now?"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import psutil

from orchestra import Agent, AgentContext, Request, Tier, Verdict

log = logging.getLogger("orchestra.agents.resource")


@dataclass(frozen=True)
class GpuReading:
    name: str
    util_percent: float
    free_mb: float
    total_mb: float


class ResourceAgent(Agent):
    """Samples CPU, RAM and (through NVML, when a GPU exists) GPU load in the background.

    With headroom it votes LOCAL; when busy it steers toward EDGE; when critical more strongly.
    It disallows LOCAL only when free memory cannot hold the largest local model. Sampling runs
    in a worker thread, never on the event loop. No GPU is reported as `gpu: "none"`.
    """

    name = "resource"

    def __init__(
        self,
        interval: float = 2.0,
        cpu_busy: float = 80.0,
        ram_busy: float = 85.0,
        cpu_critical: float = 95.0,
        ram_critical: float = 95.0,
    ) -> None:
        self.interval = interval
        self.timeout_s = 1.0
        self.cpu_busy, self.ram_busy = cpu_busy, ram_busy
        self.cpu_critical, self.ram_critical = cpu_critical, ram_critical
        self._local_need_mb = 0.0
        self._nvml: Any = None

    async def start(self, context: AgentContext) -> None:
        sizes = [m.size_mb or 0.0 for m in context.catalog.in_tier(Tier.LOCAL)]
        self._local_need_mb = max(sizes, default=0.0)
        psutil.cpu_percent(interval=None)  # primes the counter: the next call measures from here
        self._nvml = await asyncio.to_thread(_nvml_or_none)

    async def stop(self) -> None:
        if self._nvml is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
            self._nvml = None

    async def check(self, request: Request | None) -> Verdict:
        cpu, ram, avail_mb, gpus = await asyncio.to_thread(self._sample)
        return self.judge(cpu=cpu, ram=ram, avail_mb=avail_mb, gpus=gpus)

    def judge(
        self, *, cpu: float, ram: float, avail_mb: float, gpus: list[GpuReading] | None = None
    ) -> Verdict:
        """The verdict for one reading (pure, so it can be tested and replayed)."""
        metrics: dict[str, Any] = {
            "cpu_percent": round(cpu, 1),
            "ram_percent": round(ram, 1),
            "ram_available_mb": round(avail_mb),
            "cores": psutil.cpu_count() or 1,
            "local_model_mb": self._local_need_mb,
            "gpu": [g.__dict__ for g in gpus] if gpus else "none",
        }
        if self._local_need_mb and avail_mb < self._local_need_mb * 1.2:
            return self.verdict(
                target=Tier.EDGE,
                allowed=frozenset({Tier.EDGE, Tier.CLOUD}),
                confidence=0.9,
                state="no_memory",
                reason=(
                    f"{avail_mb:.0f} MB free cannot hold the "
                    f"{self._local_need_mb:.0f} MB local model"
                ),
                metrics=metrics,
            )
        if cpu >= self.cpu_critical or ram >= self.ram_critical:
            return self.verdict(
                target=Tier.EDGE, confidence=0.8, state="critical",
                reason=f"machine saturated (CPU {cpu:.0f}%, RAM {ram:.0f}%)", metrics=metrics,
            )  # fmt: skip
        if cpu >= self.cpu_busy or ram >= self.ram_busy:
            return self.verdict(
                target=Tier.EDGE, confidence=0.5, state="busy",
                reason=f"machine busy (CPU {cpu:.0f}%, RAM {ram:.0f}%)", metrics=metrics,
            )  # fmt: skip
        return self.verdict(
            target=Tier.LOCAL, confidence=0.3, state="ok",
            reason=f"headroom (CPU {cpu:.0f}%, RAM {ram:.0f}%)", metrics=metrics,
        )  # fmt: skip

    def _sample(self) -> tuple[float, float, float, list[GpuReading]]:
        mem = psutil.virtual_memory()
        return psutil.cpu_percent(interval=None), mem.percent, mem.available / 1e6, self._gpus()

    def _gpus(self) -> list[GpuReading]:
        if self._nvml is None:
            return []
        nv = self._nvml
        out = []
        try:
            for i in range(nv.nvmlDeviceGetCount()):
                handle = nv.nvmlDeviceGetHandleByIndex(i)
                mem = nv.nvmlDeviceGetMemoryInfo(handle)
                util = nv.nvmlDeviceGetUtilizationRates(handle)
                out.append(
                    GpuReading(
                        name=str(nv.nvmlDeviceGetName(handle)),
                        util_percent=float(util.gpu),
                        free_mb=mem.free / 1e6,
                        total_mb=mem.total / 1e6,
                    )
                )
        except Exception as exc:  # a GPU that vanished or a driver error: report none
            log.debug("NVML read failed: %s", exc)
            return []
        return out


def _nvml_or_none() -> Any:
    """pynvml, initialised, or None when there is no NVIDIA driver or GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
        if pynvml.nvmlDeviceGetCount() == 0:
            pynvml.nvmlShutdown()
            return None
        return pynvml
    except Exception:
        return None
