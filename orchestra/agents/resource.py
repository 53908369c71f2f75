"""The resource agent: can this machine run a local model right now?"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import psutil

from orchestra.agents.base import Agent
from orchestra.agents.context import AgentContext
from orchestra.core.request import Request
from orchestra.core.tier import Tier
from orchestra.core.verdict import Verdict

log = logging.getLogger("orchestra.agents.resource")

STATE_OK = "ok"
STATE_BUSY = "busy"
STATE_CRITICAL = "critical"
STATE_NO_MEMORY = "no_memory"
STATE_ON_BATTERY = "on_battery"
STATES = (STATE_OK, STATE_BUSY, STATE_CRITICAL, STATE_NO_MEMORY, STATE_ON_BATTERY)

_OK, _BUSY, _CRITICAL = 0, 1, 2
_REMOTE = frozenset({Tier.EDGE, Tier.CLOUD})


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One NVIDIA GPU as NVML sees it."""

    name: str
    util_percent: float
    free_mb: float
    total_mb: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Reading:
    """One sample of the machine; what `ResourceAgent.judge` decides on.

    `cpu_percent` is the CPU the judge sees: other processes' share of all cores, smoothed
    (`check` fills it); `cpu_instant` and `cpu_self` are reported only. `gpus` empty means no
    GPU; `battery_percent` None means no battery (`power_plugged` is then ignored).
    """

    ram_available_mb: float
    ram_percent: float = 0.0
    cpu_percent: float = 0.0
    load_1m: float = 0.0
    cores: int = 1
    swap_percent: float = 0.0
    gpus: tuple[GpuReading, ...] = ()
    battery_percent: float | None = None
    power_plugged: bool | None = None
    cpu_instant: float | None = None
    cpu_self: float | None = None

    @property
    def load_per_core(self) -> float:
        return self.load_1m / max(self.cores, 1)


class ResourceAgent(Agent):
    """Watches this machine's load and memory and says whether a local model should run now.

    Measures, every `interval` (2 s) in one worker thread: CPU used by *other* processes
    (EWMA-smoothed, `alpha` 0.5), the 1-minute load average per core, RAM and swap, GPU
    utilisation and free VRAM through NVML when an NVIDIA GPU exists (`gpu: "none"` otherwise),
    and battery charge and AC power (`battery: "none"` without a battery). Swap is reported, not
    judged: used swap lingers long after the pressure that filled it.

    States, first match wins:
    - `no_memory`: no LOCAL model of known `size_mb` fits (size x `fit_factor` 1.2) in available
      RAM or free VRAM; LOCAL is disallowed (the only tier this agent ever disallows).
    - `critical`: CPU >= 95 %, RAM >= 95 %, GPU >= 95 % or load >= 2.0 per core; votes EDGE,
      confidence 0.8-0.95.
    - `busy`: CPU >= 80 %, RAM >= 85 %, GPU >= 85 % or load >= 1.0 per core; votes EDGE,
      confidence 0.5-0.8, rising with load.
    - `on_battery`: not on AC and battery < 20 %; votes EDGE at 0.3-0.45 to save power.
    - `ok`: votes LOCAL at 0.3, falling to 0.1 as load nears the busy thresholds.

    Hysteresis: a state is entered at its threshold and left only below threshold minus `margin`
    (10 points; 0.1 per core for load, 10 % of the need for memory), so a reading hovering at a
    threshold does not flip the verdict on every sample. More load never makes the agent more in
    favour of LOCAL.
    """

    name = "resource"

    def __init__(
        self,
        *,
        interval: float = 2.0,
        alpha: float = 0.5,
        cpu_busy: float = 80.0,
        cpu_critical: float = 95.0,
        ram_busy: float = 85.0,
        ram_critical: float = 95.0,
        gpu_busy: float = 85.0,
        gpu_critical: float = 95.0,
        load_busy: float = 1.0,
        load_critical: float = 2.0,
        margin: float = 10.0,
        battery_low: float = 20.0,
        fit_factor: float = 1.2,
        exclude_self: bool = True,
        timeout_s: float = 1.0,
    ) -> None:
        self.interval = _number("interval", interval, lo=0.0, lo_open=True)
        self.timeout_s = _number("timeout_s", timeout_s, lo=0.0, lo_open=True)
        self.alpha = _number("alpha", alpha, lo=0.0, hi=1.0, lo_open=True)
        self.cpu_busy, self.cpu_critical = _pair("cpu", cpu_busy, cpu_critical, hi=100.0)
        self.ram_busy, self.ram_critical = _pair("ram", ram_busy, ram_critical, hi=100.0)
        self.gpu_busy, self.gpu_critical = _pair("gpu", gpu_busy, gpu_critical, hi=100.0)
        self.load_busy, self.load_critical = _pair("load", load_busy, load_critical, hi=math.inf)
        self.margin = _number("margin", margin, lo=0.0, hi=100.0)
        if self.margin >= min(self.cpu_busy, self.ram_busy, self.gpu_busy):
            raise ValueError(f"margin ({margin}) must be below every busy threshold")
        self.battery_low = _number("battery_low", battery_low, lo=0.0, hi=100.0)
        self.fit_factor = _number("fit_factor", fit_factor, lo=1.0)
        if not isinstance(exclude_self, bool):
            raise ValueError(f"exclude_self must be true or false, got {exclude_self!r}")
        self.exclude_self = exclude_self

        # Hysteresis and smoothing state, owned by `judge` / `check`.
        self._level = _OK
        self._no_memory = False
        self._battery_low = False
        self._cpu_ewma: float | None = None
        # LOCAL models as (name, size_mb or None), from the catalog at start.
        self._local: tuple[tuple[str, float | None], ...] = ()
        # Sensor state, touched only in the worker thread (one sample at a time).
        self._nvml: Any = None
        self._proc: psutil.Process | None = None
        self._cores = psutil.cpu_count() or 1
        self._last_cpu: Any = None
        self._last_self: tuple[float, float] | None = None
        self._lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, context: AgentContext) -> None:
        await self.catalog_changed(context)
        # NVML init can take hundreds of ms with a driver present: never on the event loop.
        await asyncio.to_thread(self._open_sensors_locked)

    async def catalog_changed(self, context: AgentContext) -> None:
        self._local = tuple((m.name, m.size_mb) for m in context.catalog.in_tier(Tier.LOCAL))

    async def stop(self) -> None:
        nvml, self._nvml = self._nvml, None
        if nvml is not None:
            await asyncio.to_thread(_nvml_shutdown, nvml)

    # -- sampling ------------------------------------------------------------------------------

    async def check(self, request: Request | None) -> Verdict:
        raw = await asyncio.to_thread(self.read)  # every sensor read in one hop off the loop
        return self.judge(self.smooth(raw))

    def smooth(self, raw: Reading) -> Reading:
        """`raw` with its CPU replaced by the EWMA over samples (the raw value kept as instant)."""
        prev, x = self._cpu_ewma, raw.cpu_percent
        cpu = x if prev is None else self.alpha * x + (1 - self.alpha) * prev
        self._cpu_ewma = cpu
        return replace(raw, cpu_percent=cpu, cpu_instant=x)

    def read(self) -> Reading:
        """Read every sensor once (blocking: psutil and NVML; call it from a worker thread)."""
        with self._lock:  # two overlapping samples would corrupt each other's CPU deltas
            if self._proc is None:
                self._open_sensors()
            total = self._cpu_total()
            own = self._cpu_own()
        # Orchestra's own CPU (the embedded model's threads) is not competition for it: judging
        # it would push the next request away from the model that is serving this one.
        competing = max(0.0, total - own) if self.exclude_self else total
        mem = psutil.virtual_memory()
        swap = psutil.swap_memory()
        battery = _battery()
        return Reading(
            cpu_percent=competing,
            cpu_self=own,
            load_1m=psutil.getloadavg()[0],
            cores=self._cores,
            ram_percent=mem.percent,
            ram_available_mb=mem.available / 1e6,
            swap_percent=swap.percent,
            gpus=self._gpus(),
            battery_percent=None if battery is None else float(battery.percent),
            power_plugged=None if battery is None else battery.power_plugged,
        )

    def _open_sensors_locked(self) -> None:
        with self._lock:
            self._open_sensors()

    def _open_sensors(self) -> None:
        if self._proc is None:
            self._proc = psutil.Process()
            self._cpu_total()  # primes the deltas: the first sample measures from here
            self._cpu_own()
        if self._nvml is None:
            self._nvml = _nvml_or_none()

    def _cpu_total(self) -> float:
        # psutil.cpu_percent(interval=None) keeps its "last" per calling thread, and to_thread
        # hops between pool threads (each first call answers 0.0), so the agent keeps its own.
        now = psutil.cpu_times()
        last, self._last_cpu = self._last_cpu, now
        if last is None:
            return 0.0
        busy, total = _busy_total(now)
        busy0, total0 = _busy_total(last)
        span = total - total0
        return 0.0 if span <= 0 else min(100.0, max(0.0, 100.0 * (busy - busy0) / span))

    def _cpu_own(self) -> float:
        """This process's CPU as a percent of all cores, since the last sample."""
        assert self._proc is not None
        t = self._proc.cpu_times()
        now = (t.user + t.system, time.monotonic())
        last, self._last_self = self._last_self, now
        if last is None or now[1] <= last[1]:
            return 0.0
        share = float(now[0] - last[0]) / ((now[1] - last[1]) * self._cores)
        return min(100.0, max(0.0, 100.0 * share))

    def _gpus(self) -> tuple[GpuReading, ...]:
        nv = self._nvml
        if nv is None:
            return ()
        out = []
        try:
            for i in range(nv.nvmlDeviceGetCount()):
                handle = nv.nvmlDeviceGetHandleByIndex(i)
                mem = nv.nvmlDeviceGetMemoryInfo(handle)
                util = nv.nvmlDeviceGetUtilizationRates(handle)
                name = nv.nvmlDeviceGetName(handle)
                out.append(
                    GpuReading(
                        name=name.decode() if isinstance(name, bytes) else str(name),
                        util_percent=float(util.gpu),
                        free_mb=mem.free / 1e6,
                        total_mb=mem.total / 1e6,
                    )
                )
        except Exception as exc:  # a GPU that vanished or a driver error: report none
            log.debug("NVML read failed: %s", exc)
            return ()
        return tuple(out)

    # -- judging (pure but for the hysteresis state) -------------------------------------------

    def judge(self, reading: Reading) -> Verdict:
        """The verdict for one reading; updates only the hysteresis state this agent owns."""
        metrics = self._metrics(reading)
        pressure = self._pressure(reading)
        level = self._next_level(pressure)
        fits, need_mb = self._fit(reading)
        metrics["local_fit"] = fits
        short = self._memory_short(reading, need_mb)
        on_battery = self._on_battery(reading)  # hysteresis advances whatever the state

        if short:
            return self._memory_verdict(reading, need_mb, metrics)
        if level == _CRITICAL:
            # Steering off LOCAL when saturated is not cosmetic: with one competing busy process
            # the embedded model fell from ~130 to 10-14 tok/s on 2 threads (measured).
            over = _over(pressure, critical=True)
            return self.verdict(
                target=Tier.EDGE,
                confidence=round(0.8 + 0.15 * over, 4),
                state=STATE_CRITICAL,
                reason=f"machine saturated ({_top(pressure, critical=True)})",
                metrics=metrics,
            )
        if level == _BUSY:
            return self.verdict(
                target=Tier.EDGE,
                confidence=round(0.5 + 0.3 * _over(pressure, critical=False), 4),
                state=STATE_BUSY,
                reason=f"machine busy ({_top(pressure, critical=False)})",
                metrics=metrics,
            )
        if on_battery:
            return self._battery_verdict(reading, metrics)
        # Headroom: vote LOCAL, less firmly as the busiest metric nears its busy threshold.
        near = _clamp((max(p[1] / p[2] for p in pressure) - 0.5) / 0.5)
        return self.verdict(
            target=Tier.LOCAL,
            confidence=round(0.3 - 0.2 * near, 4),
            state=STATE_OK,
            reason=f"headroom ({_summary(reading)})",
            metrics=metrics,
        )

    def _memory_verdict(self, reading: Reading, need_mb: float, metrics: dict[str, Any]) -> Verdict:
        return self.verdict(
            target=Tier.EDGE,
            allowed=_REMOTE,
            confidence=0.9,
            state=STATE_NO_MEMORY,
            reason=(
                f"no local model fits: {_room(reading):.0f} MB free, "
                f"the smallest needs {need_mb:.0f} MB"
            ),
            metrics=metrics,
        )

    def _battery_verdict(self, reading: Reading, metrics: dict[str, Any]) -> Verdict:
        # Local inference drains a battery fast; a remote tier costs this machine a socket.
        assert reading.battery_percent is not None
        drained = 1.0 - reading.battery_percent / self.battery_low if self.battery_low else 1.0
        return self.verdict(
            target=Tier.EDGE,
            confidence=round(0.3 + 0.15 * _clamp(drained), 4),
            state=STATE_ON_BATTERY,
            reason=f"on battery at {reading.battery_percent:.0f}%, saving power",
            metrics=metrics,
        )

    def _pressure(self, r: Reading) -> list[tuple[str, float, float, float]]:
        """(label, value, busy, critical) per load metric, all in percent points."""
        out = [
            ("CPU", r.cpu_percent, self.cpu_busy, self.cpu_critical),
            ("RAM", r.ram_percent, self.ram_busy, self.ram_critical),
            # Load per core as points (1.0 per core = 100) so one margin fits every metric.
            # The load average also counts our own model's threads (unlike CPU above): it lags a
            # minute behind, so its default thresholds sit at one and two runnable tasks a core.
            ("load/core", 100 * r.load_per_core, 100 * self.load_busy, 100 * self.load_critical),
        ]
        if r.gpus:
            # The least loaded GPU is the one a local runtime can still use.
            util = min(g.util_percent for g in r.gpus)
            out.append(("GPU", util, self.gpu_busy, self.gpu_critical))
        return out

    def _next_level(self, pressure: list[tuple[str, float, float, float]]) -> int:
        m = self.margin
        prev = self._level
        if any(v >= c for _, v, _, c in pressure) or (
            prev == _CRITICAL and any(v > c - m for _, v, _, c in pressure)
        ):
            level = _CRITICAL
        elif any(v >= b for _, v, b, _ in pressure) or (
            prev >= _BUSY and any(v > b - m for _, v, b, _ in pressure)
        ):
            level = _BUSY
        else:
            level = _OK
        self._level = level
        return level

    def _fit(self, r: Reading) -> tuple[Any, float]:
        """(which LOCAL models fit, or why unknown; the smallest known need in MB)."""
        if not self._local:
            return "no_local_models", 0.0
        room = _room(r)
        known = [(n, s * self.fit_factor) for n, s in self._local if s is not None]
        need = min((s for _, s in known), default=0.0)
        if len(known) < len(self._local):
            return "unknown", need  # a model of unknown size might fit: do not judge
        return [n for n, s in known if s <= room], need

    def _memory_short(self, r: Reading, need_mb: float) -> bool:
        if not self._local or any(s is None for _, s in self._local):
            self._no_memory = False
            return False
        room = _room(r)
        if self._no_memory:
            self._no_memory = room < need_mb * (1 + self.margin / 100)
        else:
            self._no_memory = room < need_mb
        return self._no_memory

    def _on_battery(self, r: Reading) -> bool:
        if r.battery_percent is None or r.power_plugged:
            self._battery_low = False
        elif self._battery_low:
            self._battery_low = r.battery_percent < self.battery_low + self.margin
        else:
            self._battery_low = r.battery_percent < self.battery_low
        return self._battery_low

    def _metrics(self, r: Reading) -> dict[str, Any]:
        return {
            "cpu_percent": round(r.cpu_percent, 1),
            "cpu_instant": None if r.cpu_instant is None else round(r.cpu_instant, 1),
            "cpu_self": None if r.cpu_self is None else round(r.cpu_self, 1),
            "load_1m": round(r.load_1m, 2),
            "load_per_core": round(r.load_per_core, 2),
            "cores": r.cores,
            "ram_percent": round(r.ram_percent, 1),
            "ram_available_mb": round(r.ram_available_mb),
            "swap_percent": round(r.swap_percent, 1),
            "gpu": [asdict(g) for g in r.gpus] if r.gpus else "none",
            "battery": (
                "none"
                if r.battery_percent is None
                else {"percent": round(r.battery_percent, 1), "plugged": bool(r.power_plugged)}
            ),
        }


# -- helpers -----------------------------------------------------------------------------------


def _number(
    name: str,
    value: object,
    *,
    lo: float = -math.inf,
    hi: float = math.inf,
    lo_open: bool = False,
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    low_bad = value <= lo if lo_open else value < lo
    if low_bad or value > hi:
        lo_s = "(" if lo_open else "["
        raise ValueError(f"{name} must be in {lo_s}{lo:g}, {hi:g}], got {value!r}")
    return float(value)


def _pair(what: str, busy: object, critical: object, *, hi: float) -> tuple[float, float]:
    b = _number(f"{what}_busy", busy, lo=0.0, hi=hi, lo_open=True)
    c = _number(f"{what}_critical", critical, lo=0.0, hi=hi, lo_open=True)
    if c <= b:
        raise ValueError(f"{what}_critical ({critical}) must be above {what}_busy ({busy})")
    return b, c


def _clamp(x: float) -> float:
    return 0.0 if x < 0 else 1.0 if x > 1 else x


def _room(r: Reading) -> float:
    """The most memory a local model could load into: available RAM or the freest GPU."""
    return max([r.ram_available_mb, *(g.free_mb for g in r.gpus)])


def _over(pressure: list[tuple[str, float, float, float]], *, critical: bool) -> float:
    """0..1: how far the worst metric is past busy (toward critical) or past critical."""
    span = [(v - c) / (c - b) if critical else (v - b) / (c - b) for _, v, b, c in pressure]
    return _clamp(max(span))


def _top(pressure: list[tuple[str, float, float, float]], *, critical: bool) -> str:
    label, value, busy, crit = max(pressure, key=lambda p: p[1] / (p[3] if critical else p[2]))
    limit = crit if critical else busy
    if label == "load/core":
        return f"load {value / 100:.2f}/core, threshold {limit / 100:g}"
    return f"{label} {value:.0f}%, threshold {limit:g}%"


def _summary(r: Reading) -> str:
    return f"CPU {r.cpu_percent:.0f}%, RAM {r.ram_percent:.0f}%, load {r.load_per_core:.2f}/core"


def _busy_total(t: Any) -> tuple[float, float]:
    # As psutil counts it: guest time is already inside user time on Linux; iowait is idle.
    total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    idle = t.idle + getattr(t, "iowait", 0.0)
    return total - idle, total


def _battery() -> Any:
    try:
        return psutil.sensors_battery()
    except Exception:  # not implemented on this platform, or an unreadable sysfs entry
        return None


def _nvml_or_none() -> Any:
    """pynvml, initialised, or None when there is no NVIDIA driver or GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        if pynvml.nvmlDeviceGetCount() > 0:
            return pynvml
    except Exception:
        pass
    _nvml_shutdown(pynvml)
    return None


def _nvml_shutdown(nvml: Any) -> None:
    try:
        nvml.nvmlShutdown()
    except Exception as exc:
        log.debug("NVML shutdown failed: %s", exc)
