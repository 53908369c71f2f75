"""`orchestra spend` on a big ledger: one million paid requests over a month.

    python bench/spend.py [--rows 1000000]

Fills a store's ledger (and, as the writer keeps them, its running sums per day and hour) with
N charges spread over the last 30 days, then times the spend summary (what `orchestra spend`
reads) and the totals a runtime reads at start, in process and as a command. The goal is 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from orchestra.store import SqliteStore  # noqa: E402

GOAL_MS = 20.0
MODELS = ["mini", "big", "lan", "haiku", "flash"]


def fill(db: Path, rows: int) -> None:
    """Charges straight into the ledger, then the running sums built from them in SQL (what the
    writer would have kept, one charge at a time)."""
    rng = random.Random(3)
    now = time.time()
    con = sqlite3.connect(db)
    with con:
        con.executemany(
            "INSERT INTO ledger (at, request_id, model, tier, prompt_tokens, completion_tokens,"
            " cost_usd, kind) VALUES (?, ?, ?, 'cloud', ?, ?, ?, 'answer')",
            (
                (now - rng.random() * 30 * 86400, f"r{i}", rng.choice(MODELS), 100, 20, 1e-5)
                for i in range(rows)
            ),
        )
        con.execute(
            "INSERT INTO spend_day SELECT date(at, 'unixepoch', 'localtime'), model, tier,"
            " COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), SUM(cost_usd) FROM ledger"
            " GROUP BY 1, 2, 3"
        )
        con.execute(
            "INSERT INTO spend_hour SELECT date(at, 'unixepoch', 'localtime'),"
            " CAST(strftime('%H', at, 'unixepoch', 'localtime') AS INTEGER), SUM(cost_usd)"
            " FROM ledger GROUP BY 1, 2"
        )
    con.close()


async def timed(db: Path) -> tuple[float, float]:
    async with SqliteStore(db) as store:
        summaries, totals = [], []
        for _ in range(20):
            t = time.perf_counter()
            await store.spend_summary()
            summaries.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            await store.spend_totals()
            totals.append((time.perf_counter() - t) * 1000)
    return statistics.median(summaries), statistics.median(totals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    rows = parser.parse_args().rows
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "orchestra.db"
        asyncio.run(_migrate(db))
        t = time.perf_counter()
        fill(db, rows)
        print(f"{rows:,} paid requests on the ledger (filled in {time.perf_counter() - t:.1f} s)")
        summary, totals = asyncio.run(timed(db))
        print(f"spend summary (orchestra spend):  {summary:7.2f} ms  goal {GOAL_MS:g} ms "
              f"({summary / GOAL_MS:.2f}x)")  # fmt: skip
        print(f"totals (read at every start):     {totals:7.2f} ms")
        cli = [sys.executable, "-m", "orchestra.cli.main", "spend", "--json"]
        env = {"ORCHESTRA_HOME": tmp, "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
        walls = []
        for _ in range(3):
            t = time.perf_counter()
            subprocess.run(cli, env=env, check=True, capture_output=True)
            walls.append(time.perf_counter() - t)
        print(f"`orchestra spend --json` process:  {statistics.median(walls) * 1000:7.0f} ms "
              "(most of it starting Python)")  # fmt: skip


async def _migrate(db: Path) -> None:
    async with SqliteStore(db):
        pass


if __name__ == "__main__":
    main()
