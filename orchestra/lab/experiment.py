"""Scripted policy experiments over simulated time (`orchestra experiment`).

A scenario (see `orchestra.lab.scenario`) scripts requests and events; at each request's simulated
time the verdicts are synthesised from the scripted state with the real agents' pure `judge`
methods (resource, connectivity, cost, complexity), plus a "breaker" verdict denying models in an
outage. Each policy decides every request; the answer is its first candidate not in an outage,
whose cost (token counts x prices) feeds the budget for later requests. Nothing waits and nothing
touches the network, so the same scenario and seed always give the same output.
"""

from __future__ import annotations

import csv
import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestra.core.catalog import Catalog
from orchestra.core.errors import ConfigError, NoAllowedModelError
from orchestra.core.model_spec import ModelSpec
from orchestra.core.request import Request
from orchestra.core.tier import TIERS, Tier
from orchestra.lab.scenario import BudgetDraw, CpuSpike, NetworkDrop, Outage, Scenario
from orchestra.lab.simulated import SimulatedAgents
from orchestra.lab.world import SimRequest, World, cost_usd
from orchestra.policies.base import Policy, decide_checked

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

ANSWERED, REFUSED = "answered", "refused"
CSV_FIELDS = (
    "t_s",
    "policy",
    "request",
    "complexity",
    "prompt_tokens",
    "completion_tokens",
    "outcome",
    "tier",
    "model",
    "cost_usd",
    "cumulative_usd",
    "spent_usd",
    "quality",
    "conditions",
    "reason",
)


@dataclass(frozen=True, slots=True)
class Row:
    """One policy's decision on one request, as written to the CSV and JSON."""

    t_s: float
    policy: str
    request: int
    complexity: float
    prompt_tokens: int
    completion_tokens: int
    outcome: str
    tier: str
    model: str
    cost_usd: float
    cumulative_usd: float
    spent_usd: float
    quality: float | None
    conditions: str
    reason: str


@dataclass
class PolicyRun:
    """Every decision of one policy, with its summary figures."""

    policy: str
    rows: list[Row] = field(default_factory=list)

    @property
    def answered(self) -> list[Row]:
        return [r for r in self.rows if r.outcome == ANSWERED]

    @property
    def refused(self) -> int:
        return sum(r.outcome == REFUSED for r in self.rows)

    @property
    def tier_mix(self) -> dict[str, int]:
        counts = Counter(r.tier for r in self.answered)
        return {str(t): counts.get(str(t), 0) for t in TIERS}

    @property
    def total_usd(self) -> float:
        return self.rows[-1].cumulative_usd if self.rows else 0.0

    @property
    def mean_quality(self) -> float | None:
        known = [r.quality for r in self.answered if r.quality is not None]
        return sum(known) / len(known) if known else None

    def summary(self) -> dict[str, Any]:
        q = self.mean_quality
        return {
            "policy": self.policy,
            "requests": len(self.rows),
            "answered": len(self.answered),
            "refused": self.refused,
            "tiers": self.tier_mix,
            "total_usd": round(self.total_usd, 8),
            "mean_quality": None if q is None else round(q, 4),
        }


@dataclass
class ExperimentResult:
    scenario: Scenario
    runs: list[PolicyRun]

    def rows(self) -> list[Row]:
        return [row for run in self.runs for row in run.rows]


# -- simulation --------------------------------------------------------------------------------


def generate_requests(scenario: Scenario) -> list[SimRequest]:
    """The scripted arrivals: one seeded draw, shared by every policy."""
    spec = scenario.requests
    rng = random.Random(scenario.seed)
    bands = spec.complexity
    weights = [b.weight for b in bands]
    out: list[SimRequest] = []
    t = spec.start
    for i in range(spec.count):
        if spec.arrival == "poisson":
            t += rng.expovariate(spec.rate_per_s)
        else:
            t = spec.start + i / spec.rate_per_s
        band = rng.choices(bands, weights)[0]
        out.append(
            SimRequest(
                index=i,
                t=round(t, 3),  # millisecond resolution keeps the CSV short and stable
                score=round(rng.uniform(*band.score), 4),
                prompt_tokens=rng.randint(*spec.prompt_tokens),
                completion_tokens=rng.randint(*spec.completion_tokens),
            )
        )
    return out


def world_at(scenario: Scenario, t: float) -> World:
    """Which events are in force at simulated time `t`."""
    offline: set[Tier] = set()
    cpu = scenario.machine.cpu_percent
    down: set[str] = set()
    drawn = 0.0
    for e in scenario.events:
        if isinstance(e, BudgetDraw):
            drawn += e.usd if e.at <= t else 0.0
        elif not e.active(t):
            continue
        elif isinstance(e, NetworkDrop):
            offline.update(e.tiers)
        elif isinstance(e, CpuSpike):
            cpu = max(cpu, e.cpu_percent)
        elif isinstance(e, Outage):
            down.add(e.model)
    return World(frozenset(offline), cpu, frozenset(down), drawn)


def run_policy(
    scenario: Scenario, policy: Policy, catalog: Catalog, requests: Sequence[SimRequest]
) -> PolicyRun:
    """Decide every request under `policy`, accumulating its spend."""
    agents = SimulatedAgents(scenario, catalog)
    run = PolicyRun(policy.name)
    own = 0.0
    for r in requests:
        w = world_at(scenario, r.t)
        spent = scenario.budget.spent_usd + w.drawn_usd + own
        verdicts = agents.verdicts(r, w, spent)
        conditions = " ".join(f"{v.agent}:{v.state}" for v in verdicts)
        request = Request.of(f"simulated request {r.index}", id=f"sim-{r.index}")
        spec: ModelSpec | None = None
        try:
            decision = decide_checked(policy, request, verdicts, catalog)
        except NoAllowedModelError as exc:
            reason = f"no allowed model: {exc}"
        else:
            reason = decision.reason
            up = [c for c in decision.candidates if c.model not in w.down_models]
            if up:
                spec = catalog.get(up[0].model)
            else:
                reason = f"every candidate in an outage; {reason}"
        cost = cost_usd(spec, r) if spec is not None else 0.0
        own += cost
        run.rows.append(
            Row(
                t_s=r.t,
                policy=policy.name,
                request=r.index,
                complexity=r.score,
                prompt_tokens=r.prompt_tokens,
                completion_tokens=r.completion_tokens,
                outcome=ANSWERED if spec is not None else REFUSED,
                tier=str(spec.tier) if spec is not None else "",
                model=spec.name if spec is not None else "",
                cost_usd=round(cost, 10),
                cumulative_usd=round(own, 10),
                spent_usd=round(spent + cost, 10),
                quality=spec.quality if spec is not None else None,
                conditions=conditions,
                reason=reason,
            )
        )
    return run


def scenario_catalog(scenario: Scenario, fallback: Sequence[ModelSpec] = ()) -> Catalog:
    """The scenario's own models, else `fallback` (the current config's catalog)."""
    specs = [m.spec() for m in scenario.models] or list(fallback)
    if not specs:
        raise ConfigError("the scenario has no [[models]] and the config's catalog is empty")
    names = {s.name for s in specs}
    for e in scenario.events:
        if isinstance(e, Outage) and e.model not in names:
            raise ConfigError(f"outage of {e.model!r}: not in the catalog ({', '.join(names)})")
    return Catalog(specs)


def run_experiment(
    scenario: Scenario, policies: Sequence[Policy], catalog: Catalog
) -> ExperimentResult:
    """Every policy on the same scripted requests."""
    names = [p.name for p in policies]
    if len(set(names)) != len(names):
        raise ConfigError(f"each policy may be given once: {', '.join(names)}")
    requests = generate_requests(scenario)
    return ExperimentResult(
        scenario, [run_policy(scenario, p, catalog, requests) for p in policies]
    )


# -- outputs -----------------------------------------------------------------------------------


def write_csv(result: ExperimentResult, path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in result.rows():
            writer.writerow({k: "" if v is None else v for k, v in asdict(row).items()})
    return path


def write_json(result: ExperimentResult, path: Path) -> Path:
    s = result.scenario
    doc = {
        "scenario": s.name,
        "seed": s.seed,
        "daily_budget_usd": s.budget.daily_usd,
        "policies": [run.summary() for run in result.runs],
        "decisions": [asdict(row) for row in result.rows()],
    }
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def write_plots(result: ExperimentResult, out: Path) -> list[Path]:
    """tiers.png and cost.png; matplotlib is imported only here, when plotting (Agg: no display
    needed)."""
    return [_plot_tiers(result, out / "tiers.png"), _plot_cost(result, out / "cost.png")]


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _plot_tiers(result: ExperimentResult, path: Path) -> Path:
    """The tier that answered each request, one panel per policy, network drops shaded."""
    runs = result.runs
    windows = _offline_windows(result.scenario)
    fig = _figure(9, 1.0 + 1.6 * len(runs))
    axes = fig.subplots(len(runs), 1, sharex=True, squeeze=False)[:, 0]
    for ax, run in zip(axes, runs, strict=True):
        _plot_run_tiers(ax, run, windows)
    axes[-1].set_xlabel("simulated time (s)")
    shade = " (grey: network down)" if windows else ""
    fig.suptitle(f"{result.scenario.name}: tier per request{shade}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    return path


def _plot_run_tiers(ax: Axes, run: PolicyRun, windows: Sequence[tuple[float, float]]) -> None:
    for start, end in windows:
        ax.axvspan(start, end, color="0.85", lw=0)
    ok = run.answered
    ax.step([r.t_s for r in ok], [Tier(r.tier).rank for r in ok], where="post", lw=0.8, alpha=0.5)
    ax.scatter([r.t_s for r in ok], [Tier(r.tier).rank for r in ok], s=8)
    refused = [r.t_s for r in run.rows if r.outcome == REFUSED]
    ax.scatter(refused, [-0.6] * len(refused), s=10, marker="x", color="red")
    ax.set_yticks([-0.6, 0, 1, 2], ["refused", "local", "edge", "cloud"])
    ax.set_ylim(-1.0, 2.4)
    ax.set_title(run.policy, fontsize=9, loc="left")


def _plot_cost(result: ExperimentResult, path: Path) -> Path:
    """Cumulative cost per policy over simulated time, with the daily budget if there is one."""
    fig = _figure(9, 4)
    ax = fig.subplots()
    for run in result.runs:
        ax.step(
            [0.0, *(r.t_s for r in run.rows)],
            [0.0, *(r.cumulative_usd for r in run.rows)],
            where="post",
            label=run.policy,
        )
    b = result.scenario.budget
    if b.daily_usd is not None:
        # The budget also covers spend from before the scenario and from elsewhere (draws).
        other = b.spent_usd + sum(
            e.usd for e in result.scenario.events if isinstance(e, BudgetDraw)
        )
        label = f"daily budget (${other:.2f} of it spent outside these calls)"
        ax.axhline(b.daily_usd, color="red", ls="--", lw=0.8, label=label)
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("cumulative cost (USD)")
    ax.set_title(f"{result.scenario.name}: cumulative cost per policy", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    return path


def _offline_windows(s: Scenario) -> list[tuple[float, float]]:
    end = max((r.t for r in generate_requests(s)), default=0.0)
    return [
        (e.at, e.at + e.lasts if e.lasts is not None else end)
        for e in s.events
        if isinstance(e, NetworkDrop)
    ]


def write_outputs(
    result: ExperimentResult, out: Path, *, plots: bool = True
) -> tuple[list[Path], str | None]:
    """Write decisions.csv, decisions.json and (matplotlib permitting) the PNG plots.

    Returns the files written and, when plots were skipped, why.
    """
    out.mkdir(parents=True, exist_ok=True)
    files = [write_csv(result, out / "decisions.csv"), write_json(result, out / "decisions.json")]
    if not plots:
        return files, "plots not requested"
    try:
        import matplotlib  # noqa: F401  (only to learn whether it is installed)
    except ImportError:
        return files, "matplotlib is not installed: plots skipped (pip install matplotlib)"
    return files + write_plots(result, out), None


def render_summary(result: ExperimentResult, console: Any) -> None:
    """The comparison table: tier mix, total cost, refusals and mean quality per policy."""
    from rich.table import Table

    s = result.scenario
    budget = "none" if s.budget.daily_usd is None else f"${s.budget.daily_usd:g}/day"
    table = Table(title=f"{s.name} (seed {s.seed}, budget {budget})")
    table.add_column("policy")
    for t in TIERS:
        table.add_column(str(t), justify="right")
    table.add_column("refused", justify="right")
    table.add_column("total cost", justify="right")
    table.add_column("mean quality", justify="right")
    for run in result.runs:
        mix = run.tier_mix
        q = run.mean_quality
        table.add_row(
            run.policy,
            *(str(mix[str(t)]) for t in TIERS),
            str(run.refused),
            f"${run.total_usd:.4f}",
            "-" if q is None else f"{q:.3f}",
        )
    console.print(table)
