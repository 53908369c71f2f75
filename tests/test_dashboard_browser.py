"""The dashboard in a real browser: headless Chromium (Debian's `chromium`, never a downloaded
build) driven by Playwright, against `orchestra serve` on 127.0.0.1 with stub providers.

Where chromium or Playwright is missing the test is skipped, except in CI (`ORCHESTRA_CI=1`,
which `.ci/run` sets after installing chromium), where it fails.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import STUB_KEY, model_toml
from server_helpers import ServerThread, serve

from orchestra.testing import Behaviour, StubProvider

TOKEN = "dash-token-0123456789"
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
WAIT_MS = 20_000  # the longest wait for anything to show (polling is every 2 s)


def missing(reason: str) -> None:
    if os.environ.get("ORCHESTRA_CI") == "1":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        missing("no chromium on PATH: `apt-get install -y chromium` (.ci/run does)")
    assert path is not None
    return path


@pytest.fixture
def browser() -> Iterator[Any]:
    executable = chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("Playwright is not installed: pip install -e '.[test]'")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def server(stub: StubProvider, write_config: Callable[..., Path]) -> Iterator[ServerThread]:
    """A local model (Lyon), a cloud model that always fails (500) and a healthy cloud one
    (Paris), with a budget, behind a token."""
    with (
        StubProvider(Behaviour(reply="Lyon")) as local,
        StubProvider(Behaviour(kind="status", status=500)) as broken,
    ):
        config = write_config(
            model_toml("stub-local", local.url, tier="local", input_cost_per_mtok=0.0,
                       output_cost_per_mtok=0.0),
            model_toml("flaky-cloud", broken.url), model_toml("stub-cloud", stub.url),
            extra="[budget]\ndaily_usd = 0.01\nmonthly_usd = 0.2\n",
        )  # fmt: skip
        with serve(config, token=TOKEN) as running:
            yield running


@pytest.mark.slow
def test_the_dashboard_shows_live_data_and_a_prompts_decision(
    server: ServerThread, browser: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    client = server.client(TOKEN)
    cloud = {"orchestra": {"tier": "cloud"}}
    for _ in range(3):
        client.chat.completions.create(model="auto", messages=FRANCE, extra_body=cloud)

    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(  # the wrong token's 401s are expected; anything else (a CSP violation) is not
        "console",
        lambda m: m.type == "error" and "401" not in m.text and errors.append(m.text),
    )
    page.goto(f"{server.url}/")

    # The page asks for the token, refuses a wrong one, then shows the data.
    expect(page.locator("#token-form")).to_be_visible()
    page.fill("#token-input", "wrong")
    page.click("#token-form button")
    expect(page.locator("#token-error")).to_have_text("that token was refused", timeout=WAIT_MS)
    page.fill("#token-input", TOKEN)
    page.click("#token-form button")
    expect(page.locator("#live")).to_have_attribute("data-state", "live", timeout=WAIT_MS)

    rows = page.locator("#decisions tbody tr[data-request]")
    expect(rows).to_have_count(3, timeout=WAIT_MS)
    for agent in ("resource", "connectivity", "cost", "complexity", "privacy"):
        expect(page.locator(f'.agent[data-agent="{agent}"]')).to_be_visible()
    flaky = page.locator('#models tr[data-model="flaky-cloud"]')
    expect(flaky).to_contain_text("open")
    expect(flaky).to_contain_text("100 %")
    expect(page.locator('#models tr[data-model="stub-cloud"]')).to_contain_text("closed")
    expect(page.locator("#stats")).to_contain_text("of $0.010 daily budget")
    expect(page.locator("#chart-days canvas")).to_have_count(1)
    expect(rows.first).to_contain_text("flaky-cloud skipped")

    # Live: a request made elsewhere shows up without a reload.
    made = client.chat.completions.create(model="stub-cloud", messages=FRANCE)
    expect(page.locator(f'tr[data-request="{made.id.removeprefix("chatcmpl-")}"]')).to_be_visible(
        timeout=WAIT_MS
    )

    # A prompt typed into the form shows its answer and its decision.
    page.fill("#try-prompt", "What is the capital of France?")
    page.select_option("#try-tier", "local")  # whatever the machine's load makes the agents say
    page.click("#try-send")
    answered = page.locator('#try-result [data-outcome="answered"]')
    expect(answered).to_contain_text("stub-local", timeout=WAIT_MS)
    expect(page.locator("#try-result .answer")).to_have_text("Lyon")
    expect(page.locator("#try-result .reason")).to_contain_text("tier local requested")
    expect(page.locator("#try-result table")).to_contain_text("complexity")
    expect(rows).to_have_count(5, timeout=WAIT_MS)
    expect(rows.first).to_contain_text("stub-local")

    assert STUB_KEY not in page.content()
    assert errors == [], errors
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_ci_installs_chromium_before_the_test_command() -> None:
    lines = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text().strip().splitlines()
    assert any("apt-get install -y chromium" in line for line in lines[:-1])
