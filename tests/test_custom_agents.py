"""Your own agents: a decorated function, a subclass, an entry point of an installed package."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import model_toml

from orchestra import FunctionAgent, NoAllowedModelError, Orchestra, Request, Tier, Verdict, agent
from orchestra.agents.registry import build_agents
from orchestra.config import parse_config
from orchestra.core.errors import ConfigError
from orchestra.testing import StubProvider


@agent(name="after-hours")
def after_hours(request: Request | None) -> dict[str, object] | None:
    if request is not None and "tonight" in request.prompt:
        return {"allowed": {"local"}, "target": "local", "reason": "after hours"}
    return None


@agent
async def likes_edge(request: Request | None) -> Verdict:
    return Verdict(agent="ignored", target=Tier.EDGE, confidence=0.4)


async def test_decorated_functions_are_agents(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    assert isinstance(after_hours, FunctionAgent) and after_hours.agent_name == "after-hours"
    config = write_config(model_toml("stub-cloud", stub.url))
    async with Orchestra(config=config, agents=[after_hours, likes_edge]) as orc:
        day = await orc.complete("hello")
        with pytest.raises(NoAllowedModelError, match="after-hours"):
            await orc.complete("see you tonight")
    verdicts = {v.agent: v for v in day.verdicts}
    assert verdicts["after-hours"].neutral and verdicts["after-hours"].state == "no_opinion"
    assert verdicts["likes-edge"].target is Tier.EDGE  # renamed to the agent's own name


async def test_ambient_sync_function_runs_off_the_loop() -> None:
    import threading

    threads: list[str] = []

    @agent(name="sampler", interval=0.02)
    def sampler(request: Request | None) -> dict[str, object]:
        threads.append(threading.current_thread().name)
        return {"state": "ok", "confidence": 0.0}

    async with Orchestra(parse_config({"embedded": {"enabled": False}}), agents=[sampler]) as orc:
        (verdict,) = await orc.verdicts("hi")
    assert verdict.state == "ok" and threads
    assert all(name != threading.main_thread().name for name in threads)


async def test_a_function_returning_nonsense_is_recorded_as_an_error() -> None:
    bad = FunctionAgent(lambda request: 42, name="bad")
    async with Orchestra(parse_config({"embedded": {"enabled": False}}), agents=[bad]) as orc:
        (verdict,) = await orc.verdicts("hi")
    assert verdict.state == "error" and "int" in verdict.reason


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A package installed the way pip would leave it: code plus a dist-info with entry points."""
    site = tmp_path / "site"
    (site / "quiet_plugin").mkdir(parents=True)
    (site / "quiet_plugin" / "__init__.py").write_text(
        textwrap.dedent(
            """
            from orchestra import Agent, Tier, agent

            class QuietHours(Agent):
                name = "quiet-hours"

                def __init__(self, strict: bool = False) -> None:
                    self.strict = strict

                async def check(self, request):
                    allowed = {Tier.LOCAL} if self.strict else {Tier.LOCAL, Tier.CLOUD}
                    return self.verdict(allowed=frozenset(allowed), reason="quiet hours")

            @agent(name="coin")
            def coin(request):
                return {"target": "cloud", "confidence": 0.1}
            """
        )
    )
    dist = site / "quiet_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: quiet-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[orchestra.agents]\nquiet-hours = quiet_plugin:QuietHours\ncoin = quiet_plugin:coin\n"
        "broken = quiet_plugin:nothing_here\n"
    )
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("quiet_plugin", None)


def test_entry_point_agents_are_enabled_by_name(installed_plugin: Path) -> None:
    config = parse_config(
        {"agents": {"enabled": ["cost", "quiet-hours", "coin"], "quiet-hours": {"strict": True}}}
    )
    made = build_agents(config.agents)
    assert [a.agent_name for a in made] == ["cost", "quiet-hours", "coin"]
    assert made[1].strict is True  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="failed to load"):
        build_agents(parse_config({"agents": {"enabled": ["broken"]}}).agents)
    with pytest.raises(ConfigError, match=r"orchestra\.agents"):
        build_agents(parse_config({"agents": {"enabled": ["telepathy"]}}).agents)


def test_agents_watch_refreshes_a_live_table(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    config = str(write_config(model_toml("stub-cloud", stub.url)))
    done = subprocess.run(
        [sys.executable, "-m", "orchestra.cli.main", "--config", config, "agents", "--watch",
         "--count", "2", "--every", "0.1"],
        capture_output=True, text=True, timeout=60, env=os.environ.copy(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for name in ("resource", "connectivity", "cost", "complexity", "privacy", "metrics"):
        assert name in done.stdout


async def test_a_fail_closed_agent_that_breaks_keeps_requests_local() -> None:
    class Guard(FunctionAgent):
        fail_closed = True

    def broken(request: Request | None) -> None:
        raise RuntimeError("scanner crashed")

    async with Orchestra(
        parse_config({"embedded": {"enabled": False}}),
        agents=[Guard(broken, name="guard"), FunctionAgent(broken, name="plain")],
    ) as orc:
        guard, plain = await orc.verdicts("hi")
    assert guard.state == "error" and guard.allowed == frozenset({Tier.LOCAL})
    assert not guard.neutral and "failing closed" in guard.reason
    assert plain.neutral  # an ordinary agent that breaks is ignored


async def test_privacy_scans_long_prompts_off_the_loop_and_still_finds_secrets() -> None:
    from orchestra.agents.privacy import PrivacyAgent

    privacy = PrivacyAgent()
    long_prompt = "lorem ipsum " * 2000 + " my key is sk-proj-" + "Ab1" * 16
    verdict = await privacy.check(Request.of(long_prompt))
    assert verdict.state == "sensitive" and "api_key" in verdict.reason
    assert "sk-proj" not in verdict.model_dump_json()
