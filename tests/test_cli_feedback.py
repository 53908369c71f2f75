"""`orchestra feedback` and `orchestra train-complexity`, run as a user would."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import model_toml
from test_cli import orchestra

from orchestra import Orchestra
from orchestra.agents.complexity.feedback import user_model_path
from orchestra.agents.complexity.scorer import load_scorer
from orchestra.testing import StubProvider

# A user whose local model is poor at code (news to the shipped model: its data holds none).
UNSEEN_CODE = (
    "Implement a function in python: def merge(a, b): return the sorted merge of two lists; "
    "include print(merge([1, 3], [2]))."
)
UNSEEN_PROSE = "Write a short friendly note to my aunt Mary thanking her for the scarf."


def code(i: int) -> str:
    what = ("sum", "max", "min", "mean", "median", "mode")[i % 6]
    return f"Write a python function def f{i}(xs): that returns the {what} of a list, and print it."


def prose(i: int) -> str:
    thing = ("ladder", "drill", "mower", "books", "tent", "bike")[i % 6]
    return f"Write a short friendly note to neighbour no. {i} thanking them for the {thing}."


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
    again = orchestra("--config", config, "feedback", short, "--good", "--json")
    assert again.returncode == 0, again.stderr
    judged = json.loads(again.stdout)
    assert judged["request_id"] == entry["request_id"] and judged["good"] is True
    assert (judged["model"], judged["tier"]) == ("stub-local", "local")

    unknown = orchestra("--config", config, "feedback", "ffffffffffff", "--good")
    assert unknown.returncode == 2
    assert "no recorded request 'ffffffffffff'" in unknown.stderr
    neither = orchestra("--config", config, "feedback", short)
    assert neither.returncode == 2 and "one of the arguments --good --bad" in neither.stderr


async def record_judged_requests(config: str, n: int) -> None:
    async with Orchestra(config=config) as orc:
        for i in range(n):
            bad = await orc.complete(code(i))
            await orc.feedback(bad.request_id, good=False)
            fine = await orc.complete(prose(i))
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
    assert mine.score(UNSEEN_CODE) > shipped.score(UNSEEN_CODE) + 0.05
    assert mine.score(UNSEEN_PROSE) < shipped.score(UNSEEN_PROSE)

    agents = orchestra("--config", config, "agents", "--json", "--prompt", UNSEEN_CODE)
    [verdict] = [
        v for v in map(json.loads, agents.stdout.splitlines()) if v["agent"] == "complexity"
    ]
    assert "complexity_model.json" in verdict["reason"], "the agent loaded the trained model"
    assert verdict["metrics"]["score"] == pytest.approx(mine.score(UNSEEN_CODE), abs=1e-3)

    bad_weight = orchestra("--config", config, "train-complexity", "--weight", "-1")
    assert bad_weight.returncode == 2 and "--weight must be >= 0" in bad_weight.stderr
