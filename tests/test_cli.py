"""The `orchestra` command, run as a user would: separate processes sharing one data directory."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from conftest import model_toml

from orchestra.cli.main import build_parser
from orchestra.testing import Behaviour, StubProvider

VERDICT_FIELDS = {"agent", "target", "allowed", "confidence", "state", "reason", "metrics"}


def orchestra(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestra.cli.main", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
        env=os.environ.copy(),
    )


def test_help_does_not_import_litellm() -> None:
    code = (
        "import sys, orchestra.cli.main as m\n"
        "try:\n    m.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'litellm' not in sys.modules, 'litellm imported'\n"
        "assert 'asyncpg' not in sys.modules, 'asyncpg imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "run" in done.stdout and "history" in done.stdout


def commands(
    parser: argparse.ArgumentParser, prefix: str = ""
) -> dict[str, argparse.ArgumentParser]:
    """Every command the parser has, by its full name (`store timezone`), leaves only."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(commands(sub, f"{prefix}{name} ") or {f"{prefix}{name}": sub})
    return found


def test_every_command_but_chat_and_serve_takes_json() -> None:
    """As the README says: a conversation and a server have no one result to print."""
    taking = {
        name
        for name, sub in commands(build_parser()).items()
        if any("--json" in action.option_strings for action in sub._actions)
    }
    assert set(commands(build_parser())) - taking == {"chat", "serve"}


def test_models_says_a_price_known_nowhere_is_unknown(
    write_config: Callable[..., Path],
) -> None:
    """Not "LiteLLM table": the catalog already holds the table's prices."""
    config = write_config(
        model_toml("listed", "http://127.0.0.1:9/v1", litellm_model="openai/gpt-4o-mini"),
        model_toml("unlisted", "http://127.0.0.1:9/v1", litellm_model="openai/no-such-model"),
    )
    config.write_text(config.read_text().replace("input_cost_per_mtok", "# input_cost_per_mtok"))
    done = orchestra("--config", str(config), "--server", "off", "models")
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[2:]}
    assert "0.15/0.6" in rows["listed"] and "unknown" in rows["unlisted"], done.stdout


def test_run_json_then_history_and_spend_in_other_processes(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    config = str(write_config(model_toml("stub-cloud", stub.url)))
    ran = orchestra("--config", config, "run", "--json", "What is the capital of France?")
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout)
    assert (
        result["text"] == "Paris" and result["model"] == "stub-cloud" and result["tier"] == "cloud"
    )
    assert result["cost_usd"] > 0 and result["latency_ms"] > 0
    assert {"policy", "candidates", "reason"} <= result["decision"].keys()
    assert result["decision"]["candidates"][0]["model"] == "stub-cloud"
    assert len(result["verdicts"]) == 5  # the five built-in agents on by default
    assert all(v.keys() >= VERDICT_FIELDS for v in result["verdicts"])

    second = orchestra("--config", config, "run", "--json", "And of Italy?")
    newest = json.loads(second.stdout)["request_id"]

    history = orchestra("--config", config, "history", "--json")
    assert history.returncode == 0, history.stderr
    lines = [json.loads(line) for line in history.stdout.splitlines()]
    assert [e["request_id"] for e in lines] == [newest, result["request_id"]]
    entry = lines[1]
    assert "text" not in entry
    for field in ("model", "tier", "cost_usd", "latency_ms", "decision", "verdicts"):
        assert entry[field] == result[field] or field == "latency_ms", field

    spend = orchestra("--config", config, "spend", "--json")
    summary = json.loads(spend.stdout)
    assert summary["answered_requests"] == 2
    assert summary["today_usd"] > result["cost_usd"]


def test_human_output_names_the_model_the_verdicts_and_the_reason(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    config = str(write_config(model_toml("stub-cloud", stub.url)))
    ran = orchestra("--config", config, "run", "hello")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "Paris"
    assert "stub-cloud (cloud)" in ran.stderr
    for agent in ("resource", "connectivity", "cost", "complexity", "privacy"):
        assert agent in ran.stderr
    assert "policy default:" in ran.stderr


def test_stream_models_agents_and_stdin(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    config = str(write_config(model_toml("stub-cloud", stub.url)))
    streamed = orchestra("--config", config, "run", "--stream", "-", stdin="hello from stdin")
    assert streamed.returncode == 0 and streamed.stdout.strip() == "Paris"
    assert stub.requests[-1]["body"]["messages"][-1]["content"] == "hello from stdin"

    models = orchestra("--config", config, "models", "--json")
    names = [json.loads(line)["name"] for line in models.stdout.splitlines()]
    assert names == ["stub-cloud"]
    assert json.loads(models.stdout.splitlines()[0])["key_present"] is True

    agents = orchestra("--config", config, "agents", "--json")
    verdicts = [json.loads(line) for line in agents.stdout.splitlines()]
    assert {v["agent"] for v in verdicts} == {
        "resource",
        "connectivity",
        "cost",
        "complexity",
        "privacy",
    }


def test_bad_config_and_bad_input_exit_with_clear_messages(
    stub: StubProvider, tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[models]]\nname = "x"\ntier = "moon"\nlitellm_model = "openai/x"\n')
    done = orchestra("--config", str(bad), "run", "hello")
    assert done.returncode == 2
    assert "models[0].tier" in done.stderr and "Traceback" not in done.stderr

    missing = orchestra("--config", str(tmp_path / "nope.toml"), "models")
    assert missing.returncode == 2 and "not found" in missing.stderr

    config = str(write_config(model_toml("stub-cloud", stub.url)))
    unknown = orchestra("--config", config, "run", "--model", "gpt-9", "hello")
    assert unknown.returncode == 2 and "unknown model 'gpt-9'" in unknown.stderr

    policy = tmp_path / "policy.toml"
    policy.write_text(model_toml("stub-cloud", stub.url) + '[policy]\nname = "coin-flip"\n')
    bad_policy = orchestra("--config", str(policy), "run", "hello")
    assert bad_policy.returncode == 2 and "unknown policy 'coin-flip'" in bad_policy.stderr


def test_history_of_an_empty_store_is_empty() -> None:
    done = orchestra("history", "--json")
    assert done.returncode == 0 and done.stdout == ""


def test_chat_keeps_the_conversation(stub: StubProvider, write_config: Callable[..., Path]) -> None:
    config = str(write_config(model_toml("stub-cloud", stub.url)))
    done = orchestra("--config", config, "chat", stdin="Capital of France?\nAnd Italy?\n\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("ai> Paris") == 2
    # The second turn carries the first question and answer.
    roles = [m["role"] for m in stub.requests[-1]["body"]["messages"]]
    assert roles == ["user", "assistant", "user"]


def test_run_explain_prints_the_whole_decision(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    config = str(write_config(model_toml("stub-cloud", stub.url)))
    done = orchestra("--config", config, "run", "--explain", "hello")
    assert done.returncode == 0, done.stderr
    parts = ("Decision", "constraints:", "votes:", "target tier:", "as the policy ranked them")
    tried = "tried in this order (balancing, health): stub-cloud"
    for part in (*parts, "1. stub-cloud (cloud)", tried, "attempts:", "reason:"):
        assert part in done.stderr, part


def test_a_reader_that_leaves_stops_the_answer_and_it_is_recorded(
    write_config: Callable[..., Path],
) -> None:
    """`orchestra run --stream … | head -c1`: the call is abandoned at once (not left to time
    out), recorded as cancelled, and the exit is quiet (120, as Python's own for a lost stdout)."""
    with StubProvider(Behaviour(reply_words=40_000)) as stub:  # more than a pipe holds
        config = str(write_config(model_toml("stub-cloud", stub.url)))
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestra.cli.main", "--config", config, "run", "--stream",
             "Count"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy(),
        )  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.read(1) == b"w"
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == 120, err
    assert "internal error" not in err
    history = orchestra("--config", config, "history", "--json")
    (entry,) = [json.loads(line) for line in history.stdout.splitlines()]
    assert entry["status"] == "error" and entry["error_kind"] == "cancelled"


def test_models_says_which_client_calls_each_model(write_config: Callable[..., Path]) -> None:
    config = write_config(
        model_toml("lan", "http://127.0.0.1:9/v1", tier="edge"),
        model_toml("lan-litellm", "http://127.0.0.1:9/v1", tier="edge", via_litellm=True),
        embedded=True,
    )
    done = orchestra("--config", str(config), "--server", "off", "models", "--json")
    assert done.returncode == 0, done.stderr
    via = {m["name"]: m["called_through"] for m in map(json.loads, done.stdout.splitlines())}
    assert via == {"lan": "openai-sdk", "lan-litellm": "litellm", "smollm2-135m": "embedded"}
