"""The scenario model for `orchestra experiment`: a TOML script of simulated time.

A scenario names a seed, a budget, the machine's baseline load, a request arrival process, an
optional model catalog and timed events (network drop, CPU spike, budget draw, provider outage).
Everything is validated here so a typo fails with the file, the field and the reason.
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from orchestra.core.errors import ConfigError
from orchestra.core.model_spec import ModelSpec
from orchestra.core.tier import Tier

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def parse_duration(value: object) -> float:
    """Seconds from a number (seconds) or a string such as '30s', '2m', '1m30s', '500ms'."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as '30s' or '2m', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        parts = _PART.findall(text)
        if not text or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"expected a duration such as '30s', '2m' or '1m30s', got {value!r}")
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    else:
        raise ValueError(f"expected a duration such as '30s' or '2m', got {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration must be finite and >= 0, got {value!r}")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


def _range(name: str, pair: tuple[float, float]) -> tuple[Any, Any]:
    lo, hi = pair
    if lo > hi:
        raise ValueError(f"{name}: low ({lo}) must not exceed high ({hi})")
    return pair


class ComplexityBand(_Strict):
    """A share (`weight`) of the prompts, with complexity scores drawn uniformly in `score`."""

    weight: float = Field(gt=0.0)
    score: tuple[float, float]

    @field_validator("score")
    @classmethod
    def _in_unit(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= x <= 1.0 for x in v):
            raise ValueError("scores must lie in [0, 1]")
        return _range("score", v)


class Arrivals(_Strict):
    """`count` requests from `start`, at `rate_per_s` (Poisson gaps, or evenly spaced)."""

    count: int = Field(gt=0, le=100_000)
    rate_per_s: float = Field(gt=0.0)
    arrival: Literal["poisson", "uniform"] = "poisson"
    start: Duration = 0.0
    prompt_tokens: tuple[int, int] = (200, 800)
    completion_tokens: tuple[int, int] = (100, 400)
    complexity: tuple[ComplexityBand, ...] = (ComplexityBand(weight=1.0, score=(0.0, 1.0)),)

    @field_validator("prompt_tokens", "completion_tokens")
    @classmethod
    def _tokens(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] < 1:
            raise ValueError("token counts must be >= 1")
        return _range("tokens", v)

    @field_validator("complexity")
    @classmethod
    def _some_band(cls, v: tuple[ComplexityBand, ...]) -> tuple[ComplexityBand, ...]:
        if not v:
            raise ValueError("give at least one complexity band")
        return v


class ScenarioBudget(_Strict):
    """The daily budget (None: none) and what was already spent today when the scenario starts."""

    daily_usd: float | None = Field(default=None, ge=0.0)
    spent_usd: float = Field(default=0.0, ge=0.0)
    alert_share: float = Field(default=0.8, gt=0.0, le=1.0)


class Machine(_Strict):
    """The machine's baseline readings (what the resource agent sees outside CPU spikes)."""

    cpu_percent: float = Field(default=20.0, ge=0.0, le=100.0)
    ram_percent: float = Field(default=40.0, ge=0.0, le=100.0)
    ram_available_mb: float = Field(default=8000.0, ge=0.0)
    cores: int = Field(default=8, gt=0)


class ScenarioModel(_Strict):
    """A simulated model: tier, prices per million tokens, quality and typical latency."""

    name: str = Field(min_length=1)
    tier: Tier
    input_cost_per_mtok: float = Field(default=0.0, ge=0.0)
    output_cost_per_mtok: float = Field(default=0.0, ge=0.0)
    quality: float | None = Field(default=None, ge=0.0, le=1.0)
    typical_latency_ms: float | None = Field(default=None, gt=0.0)
    context_window: int = Field(default=8192, gt=0)

    def spec(self) -> ModelSpec:
        return ModelSpec(
            name=self.name,
            tier=self.tier,
            litellm_model=f"simulated/{self.name}",
            input_cost_per_mtok=self.input_cost_per_mtok,
            output_cost_per_mtok=self.output_cost_per_mtok,
            quality=self.quality,
            typical_latency_ms=self.typical_latency_ms,
            context_window=self.context_window,
        )


class _Timed(_Strict):
    at: Duration
    # `for` is a Python keyword: the TOML key is `for`, the attribute `lasts`. None: to the end.
    lasts: Duration | None = Field(default=None, alias="for")

    def active(self, t: float) -> bool:
        return self.at <= t and (self.lasts is None or t < self.at + self.lasts)


class NetworkDrop(_Timed):
    """The network is gone: probes of the listed remote tiers fail (connectivity: offline)."""

    kind: Literal["network_drop"]
    tiers: tuple[Tier, ...] = (Tier.EDGE, Tier.CLOUD)

    @field_validator("tiers")
    @classmethod
    def _remote(cls, v: tuple[Tier, ...]) -> tuple[Tier, ...]:
        if Tier.LOCAL in v:
            raise ValueError("only remote tiers (edge, cloud) can drop off the network")
        return v


class CpuSpike(_Timed):
    """Other processes load the CPU to `cpu_percent` (>= 80 busy, >= 95 critical by default)."""

    kind: Literal["cpu_spike"]
    cpu_percent: float = Field(default=97.0, ge=0.0, le=100.0)


class BudgetDraw(_Strict):
    """Spend from elsewhere lands at `at`: today's spend jumps by `usd`."""

    kind: Literal["budget_draw"]
    at: Duration
    usd: float = Field(gt=0.0)


class Outage(_Timed):
    """A provider is down: `model`'s breaker is open, so the model is denied."""

    kind: Literal["outage"]
    model: str = Field(min_length=1)


Event = Annotated[NetworkDrop | CpuSpike | BudgetDraw | Outage, Field(discriminator="kind")]


class Scenario(_Strict):
    """A whole experiment script; see `examples/scenarios/` for documented examples."""

    name: str = "scenario"
    description: str = ""
    seed: int = 0
    budget: ScenarioBudget = ScenarioBudget()
    machine: Machine = Machine()
    requests: Arrivals
    models: tuple[ScenarioModel, ...] = ()
    events: tuple[Event, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        names = [m.name for m in self.models]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"model names appear twice: {', '.join(twice)}")
        if self.models:
            for i, e in enumerate(self.events):
                if isinstance(e, Outage) and e.model not in names:
                    raise ValueError(
                        f"events[{i}]: outage of {e.model!r}, not a scenario model "
                        f"(models: {', '.join(names)})"
                    )
        return self


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; any problem is a `ConfigError` naming the field."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read scenario {p}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"scenario {p} is not UTF-8 text (at offset {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"scenario {p} is not valid TOML: {exc}") from exc
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"scenario {p} is invalid:\n{_describe(exc)}") from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        # Drop the discriminator tag pydantic inserts in the location (events.0.outage.model).
        loc = ".".join(str(x) for x in err["loc"] if x not in _KINDS) or "(top level)"
        lines.append(f"  {loc}: {err['msg']}")
    return "\n".join(lines)


_KINDS = {"network_drop", "cpu_spike", "budget_draw", "outage"}
