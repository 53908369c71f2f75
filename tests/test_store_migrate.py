"""`orchestra store migrate --to URL` copies a SQLite history into PostgreSQL, once; then
`history`, `spend` and `replay` say the same on both backends."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from ledger_child import ANSWER_TOKENS, IN_PRICE, OUT_PRICE, PROMPT, WantsCloud, call_cost, exact

from orchestra import Orchestra, Verdict
from orchestra.cli import render
from orchestra.config import load_config
from orchestra.core.model_spec import ModelSpec
from orchestra.core.tier import Tier
from orchestra.execution.breaker.storage import BreakerRecord
from orchestra.execution.cache import CachedAnswer
from orchestra.store import SqliteStore
from orchestra.testing import FunctionBackend

CONFIG = f"""
[[models]]
name = "paid"
tier = "cloud"
litellm_model = "openai/paid"
input_cost_per_mtok = {IN_PRICE}
output_cost_per_mtok = {OUT_PRICE}

[[models]]
name = "free"
tier = "local"
litellm_model = "openai/free"
input_cost_per_mtok = 0.0
output_cost_per_mtok = 0.0

[embedded]
enabled = false

[health]
enabled = false

[budget]
daily_usd = {6.5 * call_cost()}
"""


def orchestra(*args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "ORCHESTRA_STORE_URL"}
    if url:
        env["ORCHESTRA_STORE_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "orchestra.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


async def make_history(config: Path, db: Path) -> list[str]:
    """Ten requests (six paid, four answered locally once the budget ran out), a judgement, a
    sample, a breaker and a cache entry, in the SQLite home."""
    conf = load_config(config)
    async with Orchestra(conf, agents=[WantsCloud()], backend=FunctionBackend(exact)) as orc:
        results = [await orc.complete(f"{PROMPT} {i}", max_tokens=ANSWER_TOKENS) for i in range(10)]
        await orc.feedback(results[0].request_id, good=False, note="too short")
    async with SqliteStore(db) as store:
        store.record_sample(Verdict(agent="resource", state="busy", at=time.time()))
        now = time.time()
        store.save_breaker("paid", BreakerRecord(state="open", failures=3, opened_at=now,
                                                 updated_at=now))  # fmt: skip
        store.add_breaker_event("paid", now, "closed", "open", "3 failures")
        store.cache_answer("k1", CachedAnswer(model="paid", tier=Tier.CLOUD, text="Paris",
                                              prompt_tokens=3, completion_tokens=1,
                                              created_at=now), now + 3600)  # fmt: skip
        await store.save_model(ModelSpec(name="added", tier=Tier.EDGE, litellm_model="openai/a"),
                               now)  # fmt: skip
    return [r.model for r in results]


async def count(url: str, table: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(f"SELECT COUNT(*) FROM {table}"))
    finally:
        await conn.close()


def test_migrate_copies_everything_once_and_the_commands_agree(
    pg_url: str, isolated_env: Path, tmp_path: Path
) -> None:
    config = tmp_path / "orchestra.toml"
    config.write_text(CONFIG)
    db = isolated_env / "orchestra.db"
    models = asyncio.run(make_history(config, db))
    assert models.count("paid") == 6 and models.count("free") == 4

    first = orchestra("--config", str(config), "store", "migrate", "--to", pg_url, "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    copied: dict[str, Any] = report["copied"]
    assert report["already_copied"] is False
    assert copied["requests"] == 10 and copied["ledger"] == 6 and copied["feedback"] == 1
    assert copied["samples"] == 1 and copied["breaker_state"] == 1
    assert copied["breaker_events"] == 1 and copied["response_cache"] == 1
    assert copied["models"] == 1
    assert copied["shared"] > 0 and copied["spend_day"] >= 2 and copied["spend_hour"] >= 1

    again = orchestra("--config", str(config), "store", "migrate", "--to", pg_url, "--json")
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert second["already_copied"] is True and not any(second["copied"].values())
    assert asyncio.run(count(pg_url, "requests")) == 10
    assert asyncio.run(count(pg_url, "ledger")) == 6, "nothing copied twice"
    assert asyncio.run(count(pg_url, "models")) == 1
    table = orchestra("--config", str(config), "store", "migrate", "--to", pg_url)
    assert "already copied" in table.stdout

    for command in (["history", "--json"], ["spend", "--json"], ["replay", "--json"]):
        on_sqlite = orchestra("--config", str(config), *command)
        on_pg = orchestra("--config", str(config), *command, url=pg_url)
        assert on_sqlite.returncode == 0 and on_pg.returncode == 0, on_pg.stderr
        if command[0] == "spend":
            lite, pg = json.loads(on_sqlite.stdout), json.loads(on_pg.stdout)
            assert pg.pop("spill_pending") == 0 and pg.pop("spill_kept_aside") == 0
            assert lite == pg
            assert pg["degraded"] is False
        else:
            assert on_sqlite.stdout == on_pg.stdout, command
    spend = orchestra("--config", str(config), "spend", url=pg_url)
    assert "degraded" not in spend.stdout


def test_the_migrate_report_prints_its_source_whole(capsys: pytest.CaptureFixture[str]) -> None:
    """On a line of its own: as the table's title it wrapped at the table's width, mid-path."""
    source = Path("/var/lib/a-rather-long-folder-name/of-the-user/orchestra/orchestra.db")
    report = {"source": "sqlite:1", "already_copied": False, "copied": {"requests": 3}}
    render.migrate_report(source, report)
    printed = capsys.readouterr().out
    assert f"copied from {source}" in printed.splitlines()
    assert "requests" in printed and "3" in printed
