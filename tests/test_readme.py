"""The README's Python samples run as written: copied out of README.md, not retyped here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import model_toml

from orchestra import Agent, Orchestra, Request
from orchestra.testing import FunctionBackend, StubProvider

README = Path(__file__).resolve().parents[1] / "README.md"


def python_block(containing: str) -> str:
    """The README's one ```python block holding `containing`."""
    blocks = re.findall(r"^```python\n(.*?)^```$", README.read_text(), re.M | re.S)
    [found] = [b for b in blocks if containing in b]
    return str(found)


def test_the_quick_start_runs(stub: StubProvider, write_config: Callable[..., Path]) -> None:
    """Against the `orchestra.toml` it names (here: one stub cloud model)."""
    write_config(model_toml("stub-cloud", stub.url))
    script = Path("quick_start.py")
    script.write_text(python_block("class NoCloudOnBattery(Agent)"))
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Paris stub-cloud cloud "), done.stdout
    assert done.stdout.rstrip().endswith("Paris"), "the story, streamed"


class Hooks:
    """The `orc` the agent sample hooks its agent to."""

    def __init__(self) -> None:
        self.hooked: list[Agent] = []

    def hook_agent(self, agent: Agent) -> None:
        self.hooked.append(agent)


async def test_the_function_agent_sample_gives_a_verdict() -> None:
    orc = Hooks()
    exec(python_block('@agent(name="office-hours")'), {"orc": orc})
    [office_hours] = orc.hooked
    verdict = await office_hours.check(Request.of("hello"))  # raises if the sample cannot run
    assert verdict.agent == "office-hours"


async def test_the_feedback_sample_records_a_judgement(write_config: Callable[..., Path]) -> None:
    sample = python_block("await orc.feedback(")
    body = "async def sample(orc):\n" + textwrap.indent(sample, "    ")
    scope: dict[str, Any] = {}
    exec(body, scope)
    config = write_config(model_toml("stub-cloud", "http://127.0.0.1:9/v1"))
    async with Orchestra(
        config, backend=FunctionBackend(lambda call: "2 = p/q..."), agents=[]
    ) as orc:
        await scope["sample"](orc)
        [entry] = await orc.history()
    assert entry["feedback"]["good"] is False and entry["feedback"]["note"] == "circular argument"
