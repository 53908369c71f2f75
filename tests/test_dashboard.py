"""The dashboard's routes: the page and its static files, spend over time, per-model numbers, and
the token (the browser itself: test_dashboard_browser.py)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import STUB_KEY, model_toml
from server_helpers import ServerThread, serve

from orchestra.server.dashboard import STATIC, model_stats
from orchestra.testing import Behaviour, StubProvider

TOKEN = "dash-token-0123456789"
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
UPLOT = STATIC / "vendor" / "uplot"


@pytest.fixture
def server(stub: StubProvider, write_config: Callable[..., Path]) -> Iterator[ServerThread]:
    """A cloud model that always fails (500) before a healthy one, with a budget, behind a token."""
    with StubProvider(Behaviour(kind="status", status=500)) as broken:
        config = write_config(
            model_toml("flaky-cloud", broken.url), model_toml("stub-cloud", stub.url),
            extra="[budget]\ndaily_usd = 1.0\nmonthly_usd = 20.0\n",
        )  # fmt: skip
        with serve(config, token=TOKEN) as running:
            yield running


def test_the_page_loads_without_the_token_and_its_data_needs_it(server: ServerThread) -> None:
    with server.http() as anonymous:
        page = anonymous.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert STUB_KEY not in page.text
        for src in re.findall(r'(?:src|href)="(static/[^"]+)"', page.text):
            assert anonymous.get(f"/{src}").status_code == 200, src
        for data in ("/dashboard/spend", "/dashboard/models", "/status", "/v1/history"):
            assert anonymous.get(data).status_code == 401, data
        assert anonymous.get("/static/../status").status_code != 200
    with server.http(TOKEN) as http:
        assert http.get("/dashboard/spend").status_code == 200


def test_the_vendored_chart_library_is_pinned_and_licensed() -> None:
    version = re.search(r"v(\d+\.\d+\.\d+)", (UPLOT / "uPlot.iife.min.js").read_text()[:200])
    assert version is not None
    assert f"uPlot {version[1]} (MIT" in (UPLOT / "VERSION").read_text()
    assert "MIT License" in (UPLOT / "LICENSE").read_text()
    assert f"uPlot {version[1]} (MIT)" in (STATIC / "index.html").read_text()


def test_spend_over_time_matches_the_totals(server: ServerThread) -> None:
    client = server.client(TOKEN)
    for _ in range(3):
        client.chat.completions.create(model="stub-cloud", messages=FRANCE)
    with server.http(TOKEN) as http:
        spend = http.get("/dashboard/spend", params={"days": 7}).json()
        status = http.get("/status").json()
        assert http.get("/dashboard/spend", params={"days": 0}).status_code == 400
        assert http.get("/dashboard/spend", params={"days": "x"}).status_code == 400
    assert len(spend["days"]) == 7 and len(spend["hours"]) == 48
    today = spend["days"][-1]
    assert today["answers"] == 3
    assert today["cost_usd"] > 0
    assert today["cost_usd"] == pytest.approx(status["spend"]["today_usd"])
    assert spend["today_usd"] == pytest.approx(today["cost_usd"])
    assert spend["hours"][-1]["cost_usd"] == pytest.approx(today["cost_usd"])
    assert (spend["budget"]["daily_usd"], spend["budget"]["monthly_usd"]) == (1.0, 20.0)


def test_each_models_latency_errors_breaker_and_health(server: ServerThread) -> None:
    client = server.client(TOKEN)
    cloud = {"orchestra": {"tier": "cloud"}}
    for _ in range(4):  # flaky-cloud fails 3 times (twice, then once), opens, then is skipped
        client.chat.completions.create(model="auto", messages=FRANCE, extra_body=cloud)
    with server.http(TOKEN) as http:
        stats = http.get("/dashboard/models").json()
    assert stats["window"] == 4
    flaky, healthy = stats["models"]
    assert (flaky["name"], flaky["tier"], flaky["breaker"]) == ("flaky-cloud", "cloud", "open")
    assert (flaky["calls"], flaky["errors"], flaky["error_rate"]) == (3, 3, 1.0)
    assert flaky["skipped"] == 2 and flaky["p50_ms"] is None
    assert (healthy["name"], healthy["breaker"], healthy["calls"]) == ("stub-cloud", "closed", 4)
    assert healthy["errors"] == 0 and healthy["error_rate"] == 0.0
    assert 0 < healthy["p50_ms"] <= healthy["p95_ms"]


def test_model_stats_counts_calls_apart_from_skips_and_cache_hits() -> None:
    attempts = [
        {"ok": True, "latency_ms": float(ms)} for ms in range(1, 101)
    ] + [
        {"ok": False, "latency_ms": 5000.0},
        {"ok": False, "latency_ms": 0.0, "skipped": True},
        {"ok": True, "latency_ms": 0.1, "cached": True},
    ]  # fmt: skip
    stats = model_stats(attempts)
    assert (stats["calls"], stats["errors"], stats["skipped"], stats["cached"]) == (101, 1, 1, 1)
    assert stats["error_rate"] == pytest.approx(1 / 101)
    assert stats["p50_ms"] == pytest.approx(50.5)
    assert stats["p95_ms"] == pytest.approx(95.05, abs=0.1)
    assert model_stats([])["error_rate"] is None
