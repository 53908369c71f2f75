"""Shared fixtures: an isolated data directory, stub providers on 127.0.0.1, config files, and
the store on both backends (SQLite, and PostgreSQL on a real server: see postgres_fixture.py)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

from postgres_fixture import pg_url, postgres  # noqa: F401  (fixtures)

from orchestra import Orchestra, Result
from orchestra.store import Store, open_store
from orchestra.testing import Behaviour, StubProvider

BACKENDS = ("sqlite", "postgres")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sqlite_only: reads the SQLite file itself; the `store` fixture is SQLite only"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test using the `store` fixture runs on each backend (unless marked sqlite_only)."""
    if "store_backend" in metafunc.fixturenames:
        only = metafunc.definition.get_closest_marker("sqlite_only")
        metafunc.parametrize("store_backend", ["sqlite"] if only else list(BACKENDS))


PROVIDER_KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GROQ_API_KEY")
STUB_KEY = "sk-stub-secret-0123456789abcdef"


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own ORCHESTRA_HOME, no config from the environment, no real keys."""
    home = tmp_path / "home"
    monkeypatch.setenv("ORCHESTRA_HOME", str(home))
    monkeypatch.delenv("ORCHESTRA_CONFIG", raising=False)
    monkeypatch.delenv("ORCHESTRA_STORE_URL", raising=False)  # a test chooses its backend
    for key in PROVIDER_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("STUB_API_KEY", STUB_KEY)
    # The CLI never reaches a developer's own `orchestra serve` on 127.0.0.1:8787 (tests of the
    # CLI as a client name their server).
    monkeypatch.setenv("ORCHESTRA_URL", "off")
    monkeypatch.delenv("ORCHESTRA_TOKEN", raising=False)
    monkeypatch.chdir(tmp_path)
    return home


@pytest.fixture(params=["openai-sdk", "litellm"])
def through_each_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test twice: OpenAI-compatible stubs called through the OpenAI SDK (the default),
    then through LiteLLM (as for every other provider). A module opts in with
    `pytestmark = pytest.mark.usefixtures("through_each_backend")`."""
    if request.param == "litellm":
        from orchestra.execution import routing_backend

        monkeypatch.setattr(routing_backend, "called_directly", lambda spec: False)
    return str(request.param)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "orchestra.db"


@pytest.fixture
def store_location(store_backend: str, db_path: Path, request: pytest.FixtureRequest) -> str | Path:
    """A fresh SQLite file, or a fresh PostgreSQL database (its URL)."""
    if store_backend == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    return db_path


@pytest.fixture
async def store(store_location: str | Path, tmp_path: Path) -> AsyncIterator[Store]:
    """An open store on a fresh SQLite file or PostgreSQL database, closed after the test."""
    s = await open_store(store_location, home=tmp_path / "spill").open()
    yield s
    await s.close()


@pytest.fixture
def stub() -> Iterator[StubProvider]:
    with StubProvider(Behaviour(reply="Paris")) as provider:
        yield provider


@pytest.fixture
def stub2() -> Iterator[StubProvider]:
    with StubProvider(Behaviour(reply="Rome")) as provider:
        yield provider


def model_toml(name: str, url: str, tier: str = "cloud", **extra: object) -> str:
    """One [[models]] block for a stub provider (priced like a small cloud model)."""
    fields: dict[str, object] = {
        "name": name,
        "tier": tier,
        "litellm_model": f"openai/{name}",
        "api_base": url,
        "api_key_env": "STUB_API_KEY",
        "input_cost_per_mtok": 0.15,
        "output_cost_per_mtok": 0.60,
        "timeout_s": 2.0,
        **extra,
    }
    body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in fields.items())
    return f"[[models]]\n{body}\n"


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a config file; the embedded model is off unless `embedded=True`. `top` holds
    top-level keys (they must come before any table), `extra` more tables."""

    def write(*model_blocks: str, embedded: bool = False, extra: str = "", top: str = "") -> Path:
        path = tmp_path / "orchestra.toml"
        body = top + "".join(model_blocks)
        body += f"\n[embedded]\nenabled = {'true' if embedded else 'false'}\n" + extra
        path.write_text(body)
        return path

    return write


async def answer(orc: Orchestra, prompt: str, stream: bool) -> tuple[Result | None, str]:
    """(the result, the text) of one request, streamed or not."""
    if stream:
        async with orc.stream(prompt) as s:
            text = "".join([piece async for piece in s])
        return s.result, text
    result = await orc.complete(prompt)
    return result, result.text
