"""`orchestra experiment`: scripted scenarios over simulated time, every policy, real agents."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestra.core.errors import ConfigError
from orchestra.lab.experiment import (
    REFUSED,
    ExperimentResult,
    run_experiment,
    scenario_catalog,
    world_at,
    write_outputs,
)
from orchestra.lab.scenario import load_scenario, parse_duration
from orchestra.policies.registry import BUILTIN_POLICIES, PolicyConfig, resolve_policy

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "examples" / "scenarios"
EXAMPLES = ["offline_commute", "budget_crunch", "busy_laptop"]
# `default` always exists; compare it with one other built-in, whichever exist today.
OTHER = next((n for n in BUILTIN_POLICIES if n != "default"), None)
POLICIES = ["default", *([OTHER] if OTHER else [])]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run(name: str, policies: list[str] = POLICIES) -> ExperimentResult:
    scenario = load_scenario(SCENARIOS / f"{name}.toml")
    chosen = [resolve_policy(PolicyConfig(name=n)) for n in policies]
    return run_experiment(scenario, chosen, scenario_catalog(scenario))


@pytest.mark.parametrize("name", EXAMPLES)
def test_each_example_runs_under_several_policies(name: str) -> None:
    result = run(name)
    assert [r.policy for r in result.runs] == POLICIES
    count = result.scenario.requests.count
    for policy_run in result.runs:
        assert len(policy_run.rows) == count
        assert sum(policy_run.tier_mix.values()) + policy_run.refused == count
        cumulative = [r.cumulative_usd for r in policy_run.rows]
        assert cumulative == sorted(cumulative)  # cost only accumulates


def test_same_seed_same_csv(tmp_path: Path) -> None:
    write_outputs(run("busy_laptop"), tmp_path / "a", plots=False)
    write_outputs(run("busy_laptop"), tmp_path / "b", plots=False)
    first = (tmp_path / "a" / "decisions.csv").read_bytes()
    assert first == (tmp_path / "b" / "decisions.csv").read_bytes()
    assert (tmp_path / "a" / "decisions.json").read_bytes() == (
        tmp_path / "b" / "decisions.json"
    ).read_bytes()
    assert first.count(b"\n") == 1 + len(POLICIES) * 150


def test_offline_window_uses_no_remote_tier() -> None:
    result = run("offline_commute", list(BUILTIN_POLICIES))
    in_window = [r for r in result.rows() if 30.0 <= r.t_s < 150.0]
    assert in_window  # the window holds requests, so the check below means something
    assert {r.tier for r in in_window} <= {"local", ""}
    # Outside the window the default policy does use remote tiers for hard prompts.
    after = [r for r in result.runs[0].rows if r.t_s >= 150.0]
    assert {"edge", "cloud"} & {r.tier for r in after}


def test_budget_never_exceeded_under_default() -> None:
    result = run("budget_crunch", ["default"])
    budget = result.scenario.budget.daily_usd
    assert budget is not None
    rows = result.runs[0].rows
    assert max(r.spent_usd for r in rows) <= budget + 1e-12
    assert any(r.tier == "cloud" for r in rows)  # it did spend, up to what the budget allowed
    draw_at = 90.0
    assert any(r.tier == "cloud" for r in rows if r.t_s < draw_at)


def test_paid_calls_never_overrun_budget_under_any_policy() -> None:
    result = run("budget_crunch", list(BUILTIN_POLICIES))
    budget = result.scenario.budget.daily_usd
    assert budget is not None
    for row in result.rows():
        if row.cost_usd > 0:
            assert row.spent_usd <= budget + 1e-12, row


def test_outage_model_never_answers() -> None:
    result = run("busy_laptop", list(BUILTIN_POLICIES))
    for row in result.rows():
        if 100.0 <= row.t_s < 140.0:
            assert row.model != "qwen-edge"


def test_cpu_spike_moves_default_off_local() -> None:
    result = run("busy_laptop", ["default"])
    spike = [r for r in result.runs[0].rows if 20.0 <= r.t_s < 50.0]
    assert spike and all("resource:critical" in r.conditions for r in spike)
    # Simple prompts stay local on a calm machine; in the spike the resource agent's vote outweighs
    # all but the surest "simple" verdicts (a vote, not a rule).
    simple = [r for r in result.runs[0].rows if r.complexity < 0.5]
    calm = [r for r in simple if r.t_s < 20.0]
    busy = [r for r in simple if 20.0 <= r.t_s < 50.0]
    assert all(r.tier == "local" for r in calm)
    assert sum(r.tier != "local" for r in busy) > len(busy) / 2


def test_pngs_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    files, skipped = write_outputs(run("offline_commute"), tmp_path)
    assert skipped is None
    pngs = [f for f in files if f.suffix == ".png"]
    assert {p.name for p in pngs} == {"tiers.png", "cost.png"}
    for png in pngs:
        assert png.read_bytes()[:8] == PNG_SIGNATURE


def test_world_at_follows_the_script() -> None:
    s = load_scenario(SCENARIOS / "busy_laptop.toml")
    assert world_at(s, 0.0).cpu_percent == 25
    assert world_at(s, 20.0).cpu_percent == 97
    assert world_at(s, 50.0).cpu_percent == 25  # the window is half-open
    assert world_at(s, 120.0).down_models == {"qwen-edge"}


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30.0), ("2m", 120.0), ("1m30s", 90.0), ("500ms", 0.5), (5, 5.0)]
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_malformed_scenario_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[requests]\ncount = 10\nrate_per_s = 1\n[[events]]\nkind = "cpu_spike"\nat = "soon"\n'
    )
    with pytest.raises(ConfigError, match=r"events\.0\.at: .*duration"):
        load_scenario(bad)
    bad.write_text('[requests]\ncount = 0\nrate_per_s = 1\n[[events]]\nkind = "flood"\nat = 1\n')
    with pytest.raises(ConfigError) as info:
        load_scenario(bad)
    assert "requests.count" in str(info.value) and "events.0" in str(info.value)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ORCHESTRA_HOME": str(cwd / "home"), "COLUMNS": "120"}
    env.pop("ORCHESTRA_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "orchestra.cli.main", "experiment", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_runs_a_scenario(tmp_path: Path) -> None:
    scenario = SCENARIOS / "offline_commute.toml"
    proc = _cli(str(scenario), "--policy", "default", "--out", "tmp", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "offline commute" in proc.stdout and "default" in proc.stdout
    rows = list(csv.DictReader((tmp_path / "tmp" / "decisions.csv").open()))
    assert len(rows) == 200 and {r["policy"] for r in rows} == {"default"}
    assert (tmp_path / "tmp" / "decisions.json").exists()
    compared = _cli(str(scenario), "--policy", "local_first", "--no-plots", "--json", cwd=tmp_path)
    assert compared.returncode == 0, compared.stderr
    summary = json.loads(compared.stdout)
    assert summary["scenario"] == "offline commute" and summary["plots_skipped"]
    [run] = summary["policies"]
    assert run["policy"] == "local_first" and run["requests"] == 200
    assert len(summary["files"]) == 2


def test_cli_malformed_scenario_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[requests]\ncount = "many"\nrate_per_s = 1\n')
    proc = _cli(str(bad), "--policy", "default", "--out", "tmp", cwd=tmp_path)
    assert proc.returncode == 2
    assert "requests.count" in proc.stderr and "Traceback" not in proc.stderr


def test_refusals_are_counted() -> None:
    # Only a cloud model and the network gone: nothing is allowed, every request is refused.
    from orchestra.lab.scenario import Scenario

    scenario = Scenario.model_validate(
        {
            "requests": {"count": 5, "rate_per_s": 1},
            "models": [{"name": "c", "tier": "cloud", "input_cost_per_mtok": 1}],
            "events": [{"kind": "network_drop", "at": 0}],
        }
    )
    policy = resolve_policy(PolicyConfig(name="default"))
    result = run_experiment(scenario, [policy], scenario_catalog(scenario))
    assert result.runs[0].refused == 5
    assert all(r.outcome == REFUSED and r.cost_usd == 0 for r in result.rows())
