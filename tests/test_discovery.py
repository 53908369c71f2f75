"""Models found, not configured: Ollama's /api/tags on loopback, providers with keys set."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from orchestra import Tier
from orchestra.config import Config
from orchestra.discovery import discover_catalog, env_provider_models, ollama_models
from orchestra.testing import refused_url


class _Tags(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(
            {"models": [{"name": "llama3.2:3b", "size": 2_000_000_000}, {"name": "qwen3:8b"}]}
        ).encode()
        self.send_response(200 if self.path == "/api/tags" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_ollama() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Tags)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


async def test_ollama_models_are_listed_as_free_local_models(fake_ollama: str) -> None:
    specs = await ollama_models(fake_ollama)
    assert [s.name for s in specs] == ["ollama/llama3.2:3b", "ollama/qwen3:8b"]
    first = specs[0]
    assert first.tier is Tier.LOCAL and first.is_free and first.size_mb == 2000.0
    assert first.litellm_model == "ollama_chat/llama3.2:3b" and first.api_base == fake_ollama


async def test_no_ollama_means_no_models() -> None:
    assert await ollama_models(refused_url().removesuffix("/v1")) == []


def test_a_cloud_model_per_provider_key() -> None:
    specs = env_provider_models({"OPENAI_API_KEY": "sk-x", "GROQ_API_KEY": "g"})
    assert [(s.name, s.api_key_env) for s in specs] == [
        ("gpt-4o-mini", "OPENAI_API_KEY"),
        ("groq-gpt-oss-20b", "GROQ_API_KEY"),
    ]
    assert all(s.tier is Tier.CLOUD for s in specs)


async def test_catalog_order_configured_then_discovered_then_embedded(
    fake_ollama: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestra.execution.embedded import EmbeddedModel

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    config = Config.model_validate({"discovery": {"ollama_url": fake_ollama}})
    specs = await discover_catalog(config, EmbeddedModel(config.embedded))
    assert [s.name for s in specs] == [
        "ollama/llama3.2:3b",
        "ollama/qwen3:8b",
        "gpt-4o-mini",
        "smollm2-135m",
    ]


def test_a_black_holed_dns_lookup_never_holds_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """An Ollama URL whose name never resolves costs the discovery's deadline, no more: not the
    resolver's own timeout when the loop ends (`asyncio.run` waits for its executor's threads,
    and `orchestra run` would wait seconds after answering)."""
    release = threading.Event()
    real = socket.getaddrinfo

    def blocking(host: str, *args: object, **kwargs: object) -> object:
        if host == "ollama.lan":
            release.wait(10)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", blocking)
    began = time.perf_counter()
    try:
        found = asyncio.run(ollama_models("http://ollama.lan:11434", timeout_s=0.2))
        took = time.perf_counter() - began
    finally:
        release.set()
    assert found == []
    assert took < 2.0, f"took {took:.1f} s"
