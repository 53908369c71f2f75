"""200 concurrent streams through `orchestra serve` (the real command, one worker and two):
nothing is lost, and the history and the ledger hold exactly what the clients were told."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from conftest import model_toml
from prometheus_client.parser import text_string_to_metric_families
from server_helpers import ServerProcess

from orchestra.testing import Behaviour, StubProvider

REQUESTS = 200
WORDS = "alpha beta gamma delta epsilon"


async def one_stream(client: object, i: int) -> tuple[str, str, float]:
    """(text, request id, cost) of one streamed answer, as the client saw them."""
    stream = await client.chat.completions.create(  # type: ignore[attr-defined]
        model="auto",
        messages=[{"role": "user", "content": f"Question {i}: what is the capital of France?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, info = "", {}
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        info = (chunk.model_extra or {}).get("orchestra") or info
    return text, info["request_id"], info["cost_usd"]


async def all_streams(url: str) -> list[tuple[str, str, float]]:
    from openai import AsyncOpenAI

    async with AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as client:
        return await asyncio.gather(*(one_stream(client, i) for i in range(REQUESTS)))


def wait_for_workers(log: Path, workers: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while log.read_text().count("Application startup complete") < workers:
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_200_concurrent_streams_lose_nothing(
    workers: int, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    with StubProvider(Behaviour(reply=WORDS, delay_s=0.05)) as stub:
        config = write_config(
            model_toml("stub-cloud", stub.url, timeout_s=30.0),
            extra="[budget]\ndaily_usd = 100.0\n",
        )
        log = tmp_path / "serve.log"
        args = ("--config", str(config), "serve", "--workers", str(workers))
        with ServerProcess(*args, log=log) as server:
            wait_for_workers(log, workers)
            answers = asyncio.run(all_streams(server.url))
            metrics = httpx.get(f"{server.url}/metrics").text
        assert "Traceback" not in log.read_text()
    assert [text for text, _, _ in answers] == [WORDS] * REQUESTS
    ids = {rid for _, rid, _ in answers}
    assert len(ids) == REQUESTS
    told = sum(cost for _, _, cost in answers)
    assert told > 0
    with sqlite3.connect(Path(os.environ["ORCHESTRA_HOME"]) / "orchestra.db") as db:
        recorded = db.execute("SELECT id, status, cost_usd FROM requests").fetchall()
        ledger = db.execute("SELECT COUNT(*), SUM(cost_usd) FROM ledger").fetchone()
        held = db.execute("SELECT COUNT(*) FROM reservations").fetchone()[0]
        today = db.execute("SELECT SUM(answers), SUM(cost_usd) FROM spend_day").fetchone()
    db.close()
    assert {rid for rid, _, _ in recorded} == ids
    assert {status for _, status, _ in recorded} == {"ok"}
    assert sum(cost for _, _, cost in recorded) == pytest.approx(told, rel=1e-9)
    assert ledger[0] == REQUESTS and ledger[1] == pytest.approx(told, rel=1e-9)
    assert today[0] == REQUESTS and today[1] == pytest.approx(told, rel=1e-9)
    assert held == 0, "every reservation was settled"
    # Every worker's counters, added up (prometheus_client's multiprocess mode with 2 workers).
    counted = {
        s.labels["stream"]: s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
        if s.name == "orchestra_requests_total" and s.labels["status"] == "ok"
    }
    assert counted == {"true": REQUESTS}
