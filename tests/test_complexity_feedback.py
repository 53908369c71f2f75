"""Learning from feedback: store rows become labelled examples; the agent loads your model."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import model_toml

from orchestra import ConfigError, Orchestra, Request, Tier
from orchestra.agents.complexity.agent import ComplexityAgent
from orchestra.agents.complexity.feedback import feedback_rows, label_for, user_model_path
from orchestra.agents.complexity.scorer import DEFAULT_MODEL, Scorer, load_scorer, signals
from orchestra.agents.registry import build_agents
from orchestra.config import load_config
from orchestra.testing import StubProvider

MATHS = "A train leaves at 3:15 pm at 84 km/h; another at 4:05 pm at 96 km/h. When do they meet?"
CHAT = "hi, how are you today?"


@pytest.fixture
def three_tiers(stub: StubProvider, write_config: Callable[..., Path]) -> Callable[..., Path]:
    def config(extra: str = "") -> Path:
        return write_config(
            *(model_toml(f"stub-{t}", stub.url, tier=t) for t in ("local", "edge", "cloud")),
            extra=extra,
        )

    return config


@pytest.mark.parametrize(
    ("tier", "good", "label"),
    [
        ("local", False, 1.0),
        ("local", True, 0.0),
        ("edge", False, 1.0),
        ("edge", True, None),
        ("cloud", False, None),
        ("cloud", True, None),
        (None, False, None),
    ],
)
def test_labels_by_the_tier_that_answered(
    tier: str | None, good: bool, label: float | None
) -> None:
    assert label_for(tier, good) == label


async def test_judged_requests_become_rows_with_their_recorded_signals(
    three_tiers: Callable[..., Path],
) -> None:
    async with Orchestra(config=three_tiers()) as orc:
        judged = {}
        for tier, good in (("local", False), ("local", True), ("edge", False), ("edge", True)):
            judged[(tier, good)] = await orc.complete(MATHS if not good else CHAT, tier=tier)
            await orc.feedback(judged[(tier, good)].request_id, good=good)
        cloud = await orc.complete(MATHS, tier="cloud")
        await orc.feedback(cloud.request_id, good=True)
        unjudged = await orc.complete(MATHS, tier="local")
        await orc.flush()
        found = feedback_rows(await orc._require_store().judged_requests())
    assert unjudged.request_id
    assert found.judged == 5
    assert [label for _, label in found.rows] == [1.0, 0.0, 1.0]
    assert found.positives == 2 and found.from_prompt == 0, "prompts are not kept by default"
    assert sum(found.skipped.values()) == 2
    assert any("edge answer judged good" in r for r in found.skipped)
    assert any("cloud answer judged good" in r for r in found.skipped)
    recorded, _ = found.rows[0]
    expected = {k: round(v, 3) for k, v in signals(MATHS).items() if v}
    assert recorded == pytest.approx(expected), "the complexity verdict's signals, as recorded"


async def test_kept_prompts_are_rescored_from_their_text(three_tiers: Callable[..., Path]) -> None:
    config = three_tiers("\n[store]\nkeep_prompts = true\n")
    async with Orchestra(config=config) as orc:
        result = await orc.complete(MATHS, tier="local")
        await orc.feedback(result.request_id, good=False)
        found = feedback_rows(await orc._require_store().judged_requests())
    assert found.from_prompt == 1
    assert found.rows[0][0] == signals(MATHS), "full precision, from the kept text"


async def test_requests_without_prompt_or_signals_are_skipped_with_a_reason(
    three_tiers: Callable[..., Path],
) -> None:
    config = three_tiers('\n[agents]\nenabled = ["cost"]\n')  # no complexity verdicts recorded
    async with Orchestra(config=config) as orc:
        result = await orc.complete(MATHS, tier="local")
        await orc.feedback(result.request_id, good=False)
        found = feedback_rows(await orc._require_store().judged_requests())
    assert found.rows == []
    assert found.skipped == {"no prompt kept and no complexity verdict recorded": 1}


def _shifted_model(path: Path, bias_shift: float) -> Scorer:
    shipped = load_scorer()
    mine = Scorer(
        shipped.features,
        shipped.weights,
        shipped.bias + bias_shift,
        shipped.mean,
        shipped.scale,
        {"about": "test model"},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    mine.save(path)
    return mine


async def test_agent_uses_the_trained_model_in_the_data_dir() -> None:
    assert ComplexityAgent().model_path == DEFAULT_MODEL, "no trained model yet: the shipped one"
    mine = _shifted_model(user_model_path(), 3.0)
    agent = ComplexityAgent()
    assert agent.model_path == user_model_path()
    verdict = await agent.check(Request.of(CHAT))
    assert verdict.metrics["score"] == pytest.approx(mine.score(CHAT), abs=1e-4)
    assert verdict.target == Tier.CLOUD, "a bias of +3 sends even chit-chat up"
    assert "complexity_model.json" in verdict.reason
    shipped = ComplexityAgent(model="shipped")
    assert (await shipped.check(Request.of(CHAT))).target == Tier.LOCAL


async def test_agent_model_setting_from_config(tmp_path: Path) -> None:
    mine = _shifted_model(tmp_path / "elsewhere.json", -3.0)
    config = tmp_path / "c.toml"
    config.write_text(f'[agents.complexity]\nmodel = "{tmp_path / "elsewhere.json"}"\n')
    [agent] = [a for a in build_agents(load_config(config).agents) if a.name == "complexity"]
    assert isinstance(agent, ComplexityAgent)
    verdict = await agent.check(Request.of(MATHS))
    assert verdict.metrics["score"] == pytest.approx(mine.score(MATHS), abs=1e-4)
    config.write_text('[agents.complexity]\nmodel = "/no/such/model.json"\n')
    with pytest.raises(ConfigError, match=r"\[agents.complexity].*does not exist"):
        build_agents(load_config(config).agents)


def test_scorer_and_model_together_are_refused() -> None:
    with pytest.raises(ValueError, match="either `scorer`"):
        ComplexityAgent(scorer=len, model="shipped")  # type: ignore[arg-type]


async def test_a_broken_trained_model_falls_back_to_the_shipped_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    user_model_path().parent.mkdir(parents=True, exist_ok=True)
    user_model_path().write_text("{ not json")
    agent = ComplexityAgent()
    with caplog.at_level(logging.WARNING):
        verdict = await agent.check(Request.of(CHAT))
    assert verdict.metrics["score"] == pytest.approx(load_scorer().score(CHAT), abs=1e-4)
    assert "unusable" in caplog.text and "shipped model" in caplog.text
    explicit = ComplexityAgent(model=user_model_path())
    with pytest.raises(ValueError, match="unusable"):
        await explicit.check(Request.of(CHAT))
