"""Health checks against real HTTP endpoints on 127.0.0.1: healthy, refused, hung; start/stop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from orchestra import Candidate, Decision
from orchestra.core.catalog import Catalog
from orchestra.core.model_spec import ModelSpec
from orchestra.core.tier import Tier
from orchestra.execution.balancing import LatencyTracker
from orchestra.execution.endpoints import Endpoints
from orchestra.execution.executor import Executor
from orchestra.execution.health import HealthChecker, HealthStatus, is_probed, probe_urls
from orchestra.execution.safeguards import Safeguards
from orchestra.testing import FunctionBackend, StubProvider, refused_url


def spec(name: str, api_base: str | None, tier: Tier = Tier.LOCAL, **extra: object) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "name": name,
            "tier": tier,
            "litellm_model": extra.pop("litellm_model", f"openai/{name}"),
            "api_base": api_base,
            **extra,
        }
    )


@pytest.fixture
def hung_url() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) but never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def test_only_local_and_edge_http_endpoints_are_probed() -> None:
    assert is_probed(spec("l", "http://127.0.0.1:1/v1"))
    assert is_probed(spec("e", "http://10.0.0.2:8080/v1", Tier.EDGE))
    assert not is_probed(spec("c", "http://127.0.0.1:1/v1", Tier.CLOUD))
    assert not is_probed(spec("none", None))
    assert not is_probed(spec("emb", "http://127.0.0.1:1/v1", embedded=True))
    specs = [spec("c", "http://x/v1", Tier.CLOUD), spec("l", "http://127.0.0.1:1/v1")]
    assert [s.name for s in HealthChecker(specs).specs] == ["l"]


def test_probe_urls() -> None:
    assert probe_urls(spec("l", "http://127.0.0.1:8080/v1/")) == (
        "http://127.0.0.1:8080/health",
        "http://127.0.0.1:8080/v1/models",
    )
    ollama = spec("o", "http://10.0.0.5:11434", Tier.EDGE, litellm_model="ollama_chat/llama3")
    assert probe_urls(ollama) == (
        "http://10.0.0.5:11434/api/tags",
        "http://10.0.0.5:11434/health",
        "http://10.0.0.5:11434/models",
    )
    assert probe_urls(spec("c", "http://x/v1", Tier.CLOUD)) == ()


async def test_healthy_endpoint(stub: StubProvider) -> None:
    tracker = LatencyTracker()
    checker = HealthChecker([spec("local", stub.url)], timeout_s=2, latency=tracker)
    assert checker.status("local") == HealthStatus()
    fresh = await checker.check_once()
    status = checker.status("local")
    assert fresh == {"local": status}
    assert status.healthy is True
    assert status.error is None
    assert status.latency_ms is not None and status.latency_ms >= 0
    assert status.checked_at is not None
    assert tracker.ewma("local") == pytest.approx(status.latency_ms)
    assert stub.requests == []  # a probe never sends a chat request


class _Paths(BaseHTTPRequestHandler):
    """200 for the server's `ok_paths`, 404 otherwise; logs every path asked for."""

    server: _PathsServer

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        status = 200 if self.path in self.server.ok_paths else 404
        body = b"{}"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


class _PathsServer(ThreadingHTTPServer):
    ok_paths: frozenset[str]
    hits: list[str]


@contextlib.contextmanager
def serving(*ok_paths: str) -> Iterator[_PathsServer]:
    server = _PathsServer(("127.0.0.1", 0), _Paths)
    server.ok_paths, server.hits = frozenset(ok_paths), []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=2)


def origin(server: _PathsServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


async def test_models_route_is_the_fallback() -> None:
    with serving("/v1/models") as server:
        checker = HealthChecker([spec("local", origin(server) + "/v1")])
        await checker.check_once()
    assert checker.status("local").healthy is True
    assert server.hits == ["/health", "/v1/models"]


async def test_ollama_tags_route() -> None:
    with serving("/api/tags") as server:
        ollama = spec("o", origin(server), Tier.EDGE, litellm_model="ollama/llama3")
        checker = HealthChecker([ollama])
        await checker.check_once()
    assert checker.status("o").healthy is True
    assert server.hits == ["/api/tags"]


async def test_no_2xx_is_unhealthy() -> None:
    with serving() as server:
        checker = HealthChecker([spec("local", origin(server) + "/v1")])
        await checker.check_once()
    status = checker.status("local")
    assert status.healthy is False
    assert status.error == f"HTTP 404 from {origin(server)}/v1/models"


async def test_refused_endpoint_is_unhealthy() -> None:
    tracker = LatencyTracker()
    checker = HealthChecker([spec("gone", refused_url())], timeout_s=2, latency=tracker)
    await checker.check_once()
    status = checker.status("gone")
    assert status.healthy is False
    assert status.latency_ms is None
    assert status.error is not None and "ConnectError" in status.error
    assert tracker.ewma("gone") is None


async def test_hung_endpoint_is_unhealthy_within_the_timeout(hung_url: str) -> None:
    checker = HealthChecker([spec("hung", hung_url)], timeout_s=0.3)
    started = time.monotonic()
    await checker.check_once()
    elapsed = time.monotonic() - started
    status = checker.status("hung")
    assert status.healthy is False
    assert status.error is not None and "0.3s" in status.error
    assert elapsed < 2.0  # bounded by the timeout, with slack for a loaded machine


async def test_one_hung_endpoint_does_not_hold_up_the_others(
    stub: StubProvider, hung_url: str
) -> None:
    checker = HealthChecker(
        [spec("hung", hung_url), spec("ok", stub.url, Tier.EDGE), spec("gone", refused_url())],
        timeout_s=0.3,
    )
    await checker.check_once()
    assert {name: s.healthy for name, s in checker.statuses().items()} == {
        "hung": False,
        "ok": True,
        "gone": False,
    }


async def test_recovers_when_the_endpoint_comes_back(stub: StubProvider) -> None:
    checker = HealthChecker([spec("local", stub.url)], timeout_s=1)
    stub.stop()
    await checker.check_once()
    assert checker.status("local").healthy is False
    stub.start()  # same port
    await checker.check_once()
    assert checker.status("local").healthy is True


async def test_start_and_stop(stub: StubProvider) -> None:
    checker = HealthChecker([spec("local", stub.url)], interval_s=0.05, timeout_s=1)
    async with checker:
        assert checker.running
        await checker.start()  # idempotent
        first = await _wait_for_check(checker, after=None)
        second = await _wait_for_check(checker, after=first)
        assert second > first
    assert not checker.running
    await checker.stop()  # idempotent
    settled = checker.status("local").checked_at
    await asyncio.sleep(0.15)
    assert checker.status("local").checked_at == settled  # no checks after stop


async def test_start_with_nothing_to_probe_is_harmless() -> None:
    checker = HealthChecker([spec("cloud", "http://example.invalid/v1", Tier.CLOUD)])
    await checker.start()
    assert await checker.check_once() == {}
    await checker.stop()
    assert checker.statuses() == {}


def test_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        HealthChecker([], interval_s=0)
    with pytest.raises(ValueError):
        HealthChecker([], timeout_s=0)


async def _wait_for_check(checker: HealthChecker, after: float | None) -> float:
    async with asyncio.timeout(5):
        while True:
            checked_at = checker.status("local").checked_at
            if checked_at is not None and (after is None or checked_at > after):
                return checked_at
            await asyncio.sleep(0.01)


async def test_a_model_found_down_is_planned_last(stub: StubProvider) -> None:
    models = [spec("first", stub.url), spec("second", refused_url()), spec("third", stub.url)]
    checker = HealthChecker(models, timeout_s=1)
    executor = Executor(
        FunctionBackend(lambda *_: "unused"), Catalog(models), Endpoints(),
        safeguards=Safeguards(health=checker),
    )  # fmt: skip
    decision = Decision(
        policy="p",
        reason="",
        candidates=tuple(Candidate(model=m.name, tier=m.tier) for m in models),
    )
    assert [s.name for s in executor.plan(decision)] == ["first", "second", "third"]
    await checker.check_once()
    assert checker.down == {"second"}
    assert [s.name for s in executor.plan(decision)] == ["first", "third", "second"]
    stub.stop()  # every model down: the decision's order stands
    await checker.check_once()
    assert checker.down == {"first", "second", "third"}
    assert [s.name for s in executor.plan(decision)] == ["first", "second", "third"]
