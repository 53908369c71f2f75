"""Bytes stored per request, with a small catalog and with 200 models and a budget.

    python bench/record_size.py [--requests 2000]

Each case answers N real prompts (the routing data's GSM8K and MMLU-Pro questions) through a
runtime with the default agents and policy, to an OpenAI-compatible stub on 127.0.0.1 through
LiteLLM, with `keep_prompts` off (the default). Printed: the database's growth per request
(the file after a checkpoint, so indexes, the `shared` values, samples and the ledger count),
against the goals of 0.5 KB and 1 KB.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gzip
import os
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ["BENCH_KEY"] = "sk-bench-0123456789"

from stub_process import stub_process  # noqa: E402

from orchestra import Orchestra  # noqa: E402
from orchestra.config import parse_config  # noqa: E402

ROUTING = REPO.parent / "shared" / "data" / "routing"
GOALS = {"3 models": 512, "200 models + budget": 1024}


def prompts(n: int) -> list[str]:
    out: list[str] = []
    for name in ("gsm8k_mixtral_gpt4.csv.gz", "mmlu_pro_correctness.csv.gz"):
        with gzip.open(ROUTING / name, "rt", encoding="utf-8") as f:
            rows = zip(range(n // 2 + 1), csv.DictReader(f), strict=False)
            out += [row.get("prompt") or row["question"] for _, row in rows]
    return out[:n]


def models(url: str, n: int) -> list[dict[str, Any]]:
    tiers = ["local", "edge"] + ["cloud"] * (n - 2)
    return [
        {
            "name": f"m{i}",
            "tier": tier,
            "litellm_model": "openai/stub",
            "api_base": url,
            "api_key_env": "BENCH_KEY",
            "input_cost_per_mtok": 0.0 if tier != "cloud" else 0.15 * (1 + i / 10),
            "output_cost_per_mtok": 0.0 if tier != "cloud" else 0.6 * (1 + i / 10),
        }
        for i, tier in enumerate(tiers)
    ]


def db_bytes(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        (free,) = conn.execute("PRAGMA freelist_count").fetchone()
        (size,) = conn.execute("PRAGMA page_size").fetchone()
        return int((pages - free) * size)
    finally:
        conn.close()


async def measure(url: str, home: Path, n_models: int, budget: bool, texts: list[str]) -> float:
    db = home / f"{n_models}.db"
    config: dict[str, Any] = {"models": models(url, n_models), "embedded": {"enabled": False}}
    if budget:
        config["budget"] = {"daily_usd": 1000.0}
    async with Orchestra(parse_config(config), db_path=db) as orc:
        for text in texts[:20]:  # the schema, first samples and shared values: not per request
            await orc.complete(text, max_tokens=16)
        await orc.flush()
        before = db_bytes(db)
        for text in texts:
            await orc.complete(text, max_tokens=16)
        await orc.flush()
    return (db_bytes(db) - before) / len(texts)


async def main(n: int) -> None:
    texts = prompts(n)
    with stub_process() as url, tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        print(f"{len(texts)} requests each (real prompts, keep_prompts off)")
        print(f"{'catalog':>22} {'bytes/request':>14} {'goal':>8}")
        for label, n_models, budget in (("3 models", 3, False), ("200 models + budget", 200, True)):
            per = await measure(url, home, n_models, budget, texts)
            goal = GOALS[label]
            print(f"{label:>22} {per:>14,.0f} {goal:>8,}  ({per / goal:.2f}x the goal)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    asyncio.run(main(parser.parse_args().requests))
