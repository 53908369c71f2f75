"""`orchestra feedback` and `orchestra train-complexity`, run as a user would."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import model_toml
from test_cli import orchestra

from agents.complexity_feedback import user_model_path
from agents.complexity_scorer import load_scorer
from orchestra import Orchestra
from orchestra.testing import StubProvider

UNSEEN_MATHS = (
    "A tank holds 2,400 litres and drains at 35 litres per minute while a pump adds 12 litres "
    "per minute. After 18 minutes a second pump doubles the inflow. When is the tank empty?"
)
UNSEEN_CHAT = "good morning! what a lovely day it is"


def maths(i: int) -> str:
    return (
        f"A shop sells {i + 3} boxes of {2 * i + 5} pens at ${i + 1}.{i % 10}5 per box and "
        f"gives {i % 4 + 1} free pens for every {i % 3 + 2} boxes. If {i + 7} people share the "
        "pens equally, how many pens does each get and what is the remainder?"
    )


def chat(i: int) -> str:
    greetings = ("hi", "hello", "hey there", "good evening", "thanks")
    return f"{greetings[i % 5]}, how are you doing today? I hope your week is going well"


@pytest.fixture
def config(stub: StubProvider, write_config: Callable[..., Path]) -> str:
    return str(write_config(model_toml("stub-local", stub.url, tier="local")))


def test_feedback_from_the_command_line(config: str) -> None:
    ran = orchestra("--config", config, "run", "What is 17 * 23?")
    assert ran.returncode == 0, ran.stderr
    assert "a bad answer? orchestra feedback" in ran.stderr
    short = ran.stderr.split("orchestra feedback ")[1].split()[0]
    assert len(short) == 12

    given = orchestra("--config", config, "feedback", short, "--bad", "--note", "wrong sum")
    assert given.returncode == 0, given.stderr
    assert "(stub-local, local) marked bad" in given.stdout

    history = orchestra("--config", config, "history", "--json")
    [entry] = [json.loads(line) for line in history.stdout.splitlines()]
    assert entry["request_id"].startswith(short)
    assert entry["feedback"]["good"] is False and entry["feedback"]["note"] == "wrong sum"
    assert " bad " in orchestra("--config", config, "history").stdout

    unknown = orchestra("--config", config, "feedback", "ffffffffffff", "--good")
    assert unknown.returncode == 2
    assert "no recorded request 'ffffffffffff'" in unknown.stderr
    neither = orchestra("--config", config, "feedback", short)
    assert neither.returncode == 2 and "one of the arguments --good --bad" in neither.stderr


async def record_judged_requests(config: str, n: int) -> None:
    async with Orchestra(config=config) as orc:
        for i in range(n):
            bad = await orc.complete(maths(i))
            await orc.feedback(bad.request_id, good=False)
            fine = await orc.complete(chat(i))
            await orc.feedback(fine.request_id, good=True)


async def test_train_complexity_learns_from_feedback(config: str) -> None:
    nothing = orchestra("--config", config, "train-complexity")
    assert nothing.returncode == 1
    assert "nothing to learn from: 0 judged request(s)" in nothing.stderr

    await record_judged_requests(config, 30)
    dry = orchestra("--config", config, "train-complexity", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "60 used (30 where the local tier failed" in dry.stdout
    assert "nothing written" in dry.stdout and not user_model_path().exists()

    trained = orchestra("--config", config, "train-complexity", "--json")
    assert trained.returncode == 0, trained.stderr
    report = json.loads(trained.stdout)
    assert report["written"] == str(user_model_path())
    assert (report["judged"], report["used"], report["positives"]) == (60, 60, 30)

    shipped, mine = load_scorer(), load_scorer(user_model_path())
    assert mine.meta != shipped.meta, "the written model says how it was trained"
    assert mine.score(UNSEEN_MATHS) > shipped.score(UNSEEN_MATHS)
    assert mine.score(UNSEEN_MATHS) - mine.score(UNSEEN_CHAT) > (
        shipped.score(UNSEEN_MATHS) - shipped.score(UNSEEN_CHAT)
    ), "feedback widened the gap between the prompts it judged alike"

    agents = orchestra("--config", config, "agents", "--json", "--prompt", UNSEEN_MATHS)
    [verdict] = [
        v for v in map(json.loads, agents.stdout.splitlines()) if v["agent"] == "complexity"
    ]
    assert "complexity_model.json" in verdict["reason"], "the agent loaded the trained model"
    assert verdict["metrics"]["score"] == pytest.approx(mine.score(UNSEEN_MATHS), abs=1e-3)

    bad_weight = orchestra("--config", config, "train-complexity", "--weight", "-1")
    assert bad_weight.returncode == 2 and "--weight must be >= 0" in bad_weight.stderr
