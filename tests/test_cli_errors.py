"""How `orchestra` fails: one line on stderr and a documented exit code, never a traceback.

0 answered, 1 no model could answer (or the store failed once open), 2 the user's error (config,
input, arguments, a store that cannot be opened), 70 a bug, 130 interrupted.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import model_toml
from test_cli import orchestra

from orchestra.testing import Behaviour, StubProvider

TESTS = Path(__file__).parent


def orchestra_raw(
    *args: str | bytes, stdin: bytes | None = None, closed_stdin: bool = False
) -> subprocess.CompletedProcess[str]:
    """`orchestra` with raw bytes on stdin, or nothing (/dev/null), or stdin closed (`<&-`)."""
    command: list[str | bytes] = [sys.executable, "-m", "orchestra.cli.main", *args]
    if closed_stdin:
        command = ["sh", "-c", 'exec "$@" <&-', "sh", *command]
    feed: dict[str, object] = {"input": stdin} if stdin is not None else {}
    done = subprocess.run(
        command,
        capture_output=True,
        timeout=120,
        env=os.environ.copy(),
        stdin=None if stdin is not None else subprocess.DEVNULL,
        **feed,  # type: ignore[call-overload]
    )
    out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    return subprocess.CompletedProcess(done.args, done.returncode, out, err)


def user_error(done: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 2 and one line on stderr, `orchestra: error: ...`, holding each of `words`."""
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("orchestra: error: "), done.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.fixture
def config(stub: StubProvider, write_config: Callable[..., Path]) -> str:
    return str(write_config(model_toml("stub-cloud", stub.url)))


def test_a_config_or_scenario_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    latin = tmp_path / "latin.toml"
    latin.write_bytes('[policy]\nname = "default"  # café\n'.encode("latin-1"))
    user_error(orchestra("--config", str(latin), "models"), str(latin), "not UTF-8", "0xe9")

    scenario = tmp_path / "scenario.toml"
    scenario.write_bytes('name = "café"\n'.encode("latin-1"))
    user_error(orchestra("experiment", str(scenario)), str(scenario), "not UTF-8")


def test_run_dash_needs_a_utf8_prompt_on_stdin(config: str, stub: StubProvider) -> None:
    user_error(orchestra_raw("--config", config, "run", "-"), "no prompt on standard input")
    closed = orchestra_raw("--config", config, "run", "-", closed_stdin=True)
    user_error(closed, "no prompt on standard input")
    blank = orchestra_raw("--config", config, "run", "-", stdin=b" \n\n")
    user_error(blank, "no prompt on standard input")
    latin = orchestra_raw(
        "--config", config, "run", "--stream", "-", stdin="café".encode("latin-1")
    )
    user_error(latin, "standard input is not UTF-8", "0xe9")
    argv = orchestra_raw("--config", config, "run", "café".encode("latin-1"))
    user_error(argv, "the prompt is not UTF-8")
    assert stub.requests == []  # none of them reached a model


def test_chat_with_stdin_closed_or_empty_just_ends(config: str) -> None:
    for done in (
        orchestra_raw("--config", config, "chat", closed_stdin=True),
        orchestra_raw("--config", config, "chat"),
    ):
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr


def test_a_policy_that_raises_when_built_is_named(
    stub: StubProvider, write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    )
    policy = '[policy]\nname = "policy_fixture:Exploding"\n'
    config = str(write_config(model_toml("stub-cloud", stub.url), extra=policy))
    done = orchestra("--config", config, "run", "hello")
    user_error(done, "policy_fixture:Exploding", "the policy fell over")
    as_json = orchestra("--config", config, "run", "--json", "hello")
    assert as_json.returncode == 2
    assert json.loads(as_json.stdout)["error"]["kind"] == "PolicyError"


def test_a_store_that_cannot_be_opened_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("not a directory")
    unwritable = orchestra("--home", str(tmp_path / "file.txt" / "home"), "history")
    user_error(unwritable, "cannot open the store", "file.txt")

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "orchestra.db").write_bytes(b"\x8f garbage, not SQLite \x00" * 200)
    user_error(orchestra("--home", str(corrupt), "spend"), "not a database")

    newer = tmp_path / "newer"
    newer.mkdir()
    with sqlite3.connect(newer / "orchestra.db") as conn:
        conn.execute("PRAGMA user_version = 999")
    conn.close()
    done = orchestra("--home", str(newer), "run", "--json", "hello")
    user_error(done, "newer than this Orchestra", str(newer / "orchestra.db"))
    assert json.loads(done.stdout)["error"]["kind"] == "StoreUnavailable"


def test_a_write_that_fails_once_the_store_is_open_is_not_a_user_error(config: str) -> None:
    answered = json.loads(orchestra("--config", config, "run", "--json", "hello").stdout)
    with sqlite3.connect(Path(os.environ["ORCHESTRA_HOME"]) / "orchestra.db") as conn:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON feedback"
            " BEGIN SELECT RAISE(ABORT, 'the disk says no'); END"
        )
    conn.close()
    done = orchestra("--config", config, "feedback", answered["request_id"], "--bad")
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("orchestra: StoreError: ") and "the disk says no" in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("run", "--max-tokens", "0", "hello"),
        ("run", "--max-tokens", "-5", "hello"),
        ("chat", "--max-tokens", "0"),
        ("history", "--limit", "-1"),
        ("history", "--limit", "0"),
        ("replay", "--limit", "0"),
        ("agents", "--count", "0"),
        ("agents", "--every", "0"),
        ("agents", "--every", "-1"),
        ("agents", "--every", "nan"),
    ],
)
def test_counts_and_periods_must_be_positive(config: str, args: tuple[str, ...]) -> None:
    done = orchestra("--config", config, *args)
    user_error(done, f"argument {args[1]}", "expected a positive", f"{args[0]} --help")
    assert done.stdout == ""


def test_help_says_what_a_count_must_be() -> None:
    def help_of(command: str) -> str:
        return " ".join(orchestra(command, "--help").stdout.split())  # argparse wraps lines

    assert "--max-tokens N cap the answer's length at N tokens (a positive integer)" in help_of(
        "run"
    )
    assert "--limit N how many (a positive integer; default 20)" in help_of("history")
    assert "--every SECONDS --watch refresh, seconds (a positive number" in help_of("agents")


def test_run_json_prints_the_error_as_json(
    tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    with StubProvider(Behaviour(kind="status", status=401, error_message="bad key")) as refusing:
        config = str(write_config(model_toml("stub-cloud", refusing.url)))
        failed = orchestra("--config", config, "run", "--json", "hello")
    assert failed.returncode == 1, failed.stderr
    error = json.loads(failed.stdout)["error"]
    assert error.keys() == {"kind", "message", "attempts", "request_id"}
    assert error["kind"] == "AllCandidatesFailed" and "stub-cloud" in error["message"]
    assert error["attempts"][0]["model"] == "stub-cloud" and error["attempts"][0]["ok"] is False
    assert error["attempts"][0]["error_kind"] == "auth"
    recorded = orchestra("--config", config, "history", "--json").stdout.splitlines()
    assert json.loads(recorded[0])["request_id"] == error["request_id"]

    unknown = orchestra("--config", config, "run", "--json", "--model", "gpt-9", "hello")
    assert unknown.returncode == 2
    assert json.loads(unknown.stdout)["error"]["kind"] == "UnknownModelError"

    missing = orchestra("--config", str(tmp_path / "nope.toml"), "run", "--json", "hello")
    assert missing.returncode == 2
    assert json.loads(missing.stdout) == {
        "error": {
            "kind": "ConfigError",
            "message": f"config file not found: {tmp_path / 'nope.toml'}",
            "attempts": [],
            "request_id": None,
        }
    }


def patched(raises: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`orchestra history ...` whose command raises `raises` (a bug, as the CLI meets one)."""
    code = (
        "import sys\n"
        "from orchestra.cli import commands, main\n"
        "async def broken(args, config):\n"
        f"    raise {raises}\n"
        "commands.COMMANDS['history'] = broken\n"
        "sys.exit(main.main(sys.argv[1:]))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args, "history"],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ.copy(),
    )


def test_an_unexpected_exception_is_an_internal_error_without_a_traceback() -> None:
    done = patched("ZeroDivisionError('oops')")
    assert done.returncode == 70
    assert done.stderr == (
        "orchestra: internal error: ZeroDivisionError: oops (run with -vv for the traceback)\n"
    )
    verbose = patched("ZeroDivisionError('oops')", "-vv")
    assert verbose.returncode == 70
    assert "Traceback" in verbose.stderr and ", in broken\n" in verbose.stderr
    assert verbose.stderr.rstrip().endswith("orchestra: internal error: ZeroDivisionError: oops")
    assert patched("KeyboardInterrupt").returncode == 130


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_whose_record_cannot_be_written_is_shown_and_fails_loudly(
    config: str, stream: bool
) -> None:
    orchestra("--config", config, "run", "hello")  # creates the store
    with sqlite3.connect(Path(os.environ["ORCHESTRA_HOME"]) / "orchestra.db") as conn:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON requests"
            " BEGIN SELECT RAISE(ABORT, 'the disk is full'); END"
        )
    conn.close()
    done = orchestra("--config", config, "run", *(["--stream"] if stream else []), "hello")
    assert done.returncode == 1, done.stderr
    assert "Paris" in done.stdout, "the answer came (and was paid for): it is shown"
    assert "could not be written" in done.stderr and "the disk is full" in done.stderr
    assert "Traceback" not in done.stderr
    assert "orchestra feedback" not in done.stderr, "no feedback offered for an unrecorded answer"
