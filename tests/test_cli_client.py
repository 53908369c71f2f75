"""The CLI as a client of a running `orchestra serve` (real uvicorn on 127.0.0.1), and in-process
when no server answers. The server's runtime answers through a function backend, the CLI's own
through a stub provider: the answer's text says which one answered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import model_toml
from server_helpers import ServerThread, free_port, serve

from orchestra.config import Config
from orchestra.core.errors import ProviderError
from orchestra.runtime import Orchestra
from orchestra.testing import Call, FunctionBackend, StubProvider

FROM_SERVER = "Paris, said the server"
TOKEN = "t0ken-for-the-cli-tests"


def server_runtime(config: Config) -> Orchestra:
    def answer(call: Call) -> list[str]:
        return ["Paris, ", "said ", "the server"]

    return Orchestra(config, backend=FunctionBackend(answer))


@pytest.fixture
def config(stub: StubProvider, write_config: Callable[..., Path]) -> Path:
    """./orchestra.toml (the CLI finds it in its working directory): one cloud model whose
    provider, called in-process, answers "Paris"."""
    return write_config(model_toml("stub-cloud", stub.url))


@pytest.fixture
def server(config: Path) -> Iterator[ServerThread]:
    with serve(config, runtime=server_runtime) as running:
        yield running


def orchestra(*args: str, url: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ORCHESTRA_URL": url}
    if token:
        env["ORCHESTRA_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "orchestra.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_run_answers_through_the_server_and_says_so(server: ServerThread) -> None:
    ran = orchestra("-v", "run", "--json", "What is the capital of France?", url=server.url)
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout)
    assert result["text"] == FROM_SERVER and result["model"] == "stub-cloud"
    assert f"answering through the server at {server.url}" in ran.stderr
    with server.http() as http:
        history = http.get("/v1/history").json()["data"]
    assert [e["request_id"] for e in history] == [result["request_id"]]
    # The same fields as in-process (`Result` as JSON), the decision and verdicts included.
    offline = orchestra("run", "--json", "What is the capital of France?", url="off")
    assert offline.returncode == 0, offline.stderr
    assert json.loads(offline.stdout).keys() == result.keys()
    assert len(result["verdicts"]) == 5 and result["decision"]["reason"]


def test_streamed_run_and_its_footer(server: ServerThread) -> None:
    ran = orchestra("run", "--stream", "--max-tokens", "20", "Capital of France?", url=server.url)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == FROM_SERVER + "\n"
    assert "stub-cloud (cloud) answered in" in ran.stderr
    assert "orchestra feedback" in ran.stderr

    plain = orchestra("run", "--explain", "--tier", "cloud", "Capital?", url=server.url)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == FROM_SERVER + "\n"
    assert "Decision" in plain.stderr and "tried in this order" in plain.stderr


def test_history_spend_and_agents_print_what_in_process_prints(server: ServerThread) -> None:
    assert orchestra("run", "Capital of France?", url=server.url).returncode == 0
    for command in (["history", "--json"], ["spend", "--json"], ["history"], ["spend"]):
        remote = orchestra(*command, url=server.url)
        local = orchestra(*command, url="off")  # the same data directory, read in-process
        assert remote.returncode == local.returncode == 0, remote.stderr + local.stderr
        assert remote.stdout == local.stdout, command
    agents = orchestra("agents", "--json", "--prompt", "prove it", url=server.url)
    local_agents = orchestra("agents", "--json", "--prompt", "prove it", url="off")
    names = [[json.loads(line)["agent"] for line in a.stdout.splitlines()]
             for a in (agents, local_agents)]  # fmt: skip
    assert names[0] == names[1] and len(names[0]) == 5


def test_chat_through_the_server(server: ServerThread) -> None:
    env = {**os.environ, "ORCHESTRA_URL": server.url}
    done = subprocess.run(
        [sys.executable, "-m", "orchestra.cli.main", "chat"],
        input="Hello\nAnd again\n\n",
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(FROM_SERVER) == 2
    with server.http() as http:
        history = http.get("/v1/history").json()["data"]
    assert len(history) == 2


def test_errors_are_reported_as_in_process(server: ServerThread) -> None:
    remote = orchestra("run", "--model", "nope", "Hi", url=server.url)
    local = orchestra("run", "--model", "nope", "Hi", url="off")
    assert remote.returncode == local.returncode == 2
    assert remote.stderr.startswith("orchestra: error: ") and "nope" in remote.stderr
    remote_json = orchestra("run", "--json", "--model", "nope", "Hi", url=server.url)
    local_json = orchestra("run", "--json", "--model", "nope", "Hi", url="off")
    assert json.loads(remote_json.stdout) == json.loads(local_json.stdout)


def test_no_server_runs_in_process(config: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    ran = orchestra("-v", "run", "--json", "What is the capital of France?", url=url)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["text"] == "Paris"
    assert "no server answers: running in-process" in ran.stderr
    # An address named with --server must answer.
    named = orchestra("--server", url, "history", url="off")
    assert named.returncode == 2 and "no server answers at" in named.stderr


def test_a_server_with_a_token(config: Path) -> None:
    with serve(config, token=TOKEN, runtime=server_runtime) as server:
        refused = orchestra("history", url=server.url)
        assert refused.returncode == 2 and "ORCHESTRA_TOKEN" in refused.stderr
        models = orchestra("models", "--json", url=server.url, token=TOKEN)
        assert models.returncode == 0, models.stderr
        local = orchestra("models", "--json", url="off")
    listed = [json.loads(line) for line in models.stdout.splitlines()]
    assert listed == [json.loads(line) for line in local.stdout.splitlines()]
    assert listed[0]["name"] == "stub-cloud" and listed[0]["breaker"] == "closed"


def test_a_client_imports_neither_the_runtime_nor_litellm(server: ServerThread) -> None:
    code = (
        "import sys\nfrom orchestra.cli.main import main\n"
        "assert main(['run', '--stream', 'Hi']) == 0\n"
        "heavy = sorted(m for m in ('litellm', 'httpx', 'orchestra.runtime', 'aiosqlite') "
        "if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    env = {**os.environ, "ORCHESTRA_URL": server.url}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert FROM_SERVER in done.stdout


def test_a_failure_through_the_server_reads_as_in_process(config: Path) -> None:
    def refuse(call: Call) -> str:
        raise ProviderError("stub-cloud: HTTP 500: down", kind="server", model=call.spec.name)

    runtime = lambda c: Orchestra(c, backend=FunctionBackend(refuse))  # noqa: E731
    with serve(config, runtime=runtime) as server:
        failed = orchestra("run", "Hi", url=server.url)
        as_json = orchestra("run", "--json", "Hi", url=server.url)
    assert failed.returncode == as_json.returncode == 1
    assert failed.stderr.startswith("orchestra: AllCandidatesFailed: "), failed.stderr
    error = json.loads(as_json.stdout)["error"]
    assert error["kind"] == "AllCandidatesFailed" and error["request_id"]
    first = error["attempts"][0]
    assert (first["model"], first["error_kind"]) == ("stub-cloud", "server")
