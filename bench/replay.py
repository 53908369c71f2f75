"""Replay speed over a large synthetic history.

    python bench/replay.py [--requests 100000]

Writes N request rows and 4 verdict rows each (as four of the built-in agents leave them) into a
temporary SQLite store through its real schema, then times `replay()` with one policy and with two.
Prints requests per second for each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import tempfile
import time
from pathlib import Path

from orchestra import Catalog, ModelSpec, Tier
from orchestra.lab.replay import replay
from orchestra.policies.registry import PolicyConfig, resolve_policy
from orchestra.store import SqliteStore

MODELS = [
    ModelSpec(name="tiny", tier=Tier.LOCAL, litellm_model="ollama/tiny", input_cost_per_mtok=0,
              output_cost_per_mtok=0),
    ModelSpec(name="lan", tier=Tier.EDGE, litellm_model="openai/lan", input_cost_per_mtok=0.05,
              output_cost_per_mtok=0.1),
    ModelSpec(name="mini", tier=Tier.CLOUD, litellm_model="openai/mini", input_cost_per_mtok=0.15,
              output_cost_per_mtok=0.6),
    ModelSpec(name="big", tier=Tier.CLOUD, litellm_model="openai/big", input_cost_per_mtok=2.5,
              output_cost_per_mtok=10),
]  # fmt: skip
ALLOWED = [
    json.dumps(["local", "edge", "cloud"]),
    json.dumps(["local", "edge"]),
    json.dumps(["local"]),
]


def fill(db: Path, n: int, seed: int = 7) -> None:
    """N synthetic requests (with decision JSON) and their verdicts, in one transaction."""
    rng = random.Random(seed)
    now = time.time()
    requests, verdicts = [], []
    for i in range(n):
        rid = f"r{i:07d}"
        tier = rng.choice(["local", "edge", "cloud"])
        model = {"local": "tiny", "edge": "lan", "cloud": "mini"}[tier]
        pt, ct = rng.randint(10, 2000), rng.randint(5, 500)
        decision = json.dumps(
            {"policy": "default", "candidates": [{"model": model, "tier": tier, "reason": ""}],
             "reason": "", "target": tier, "votes": {}, "excluded": []}
        )  # fmt: skip
        forced = "big" if i % 50 == 0 else None
        requests.append(
            (rid, now - i, "ok", model, tier, pt * 1e-7, 12.0, pt, ct, "x" * 64,
             json.dumps({"chars": pt * 4, "words": pt, "lines": 1, "messages": 1}), None, None,
             forced, None, 0, "default", decision, None, None)
        )  # fmt: skip
        for pos, agent in enumerate(("resource", "connectivity", "cost", "complexity")):
            verdicts.append(
                (rid, pos, agent, rng.choice(["local", "edge", "cloud", None]),
                 rng.choice(ALLOWED) if agent != "complexity" else ALLOWED[0],
                 round(rng.random(), 3), "ok", "synthetic", json.dumps({"v": rng.random()}),
                 now - i, int(rng.random() < 0.05), int(rng.random() < 0.02),
                 json.dumps(["big"]) if agent == "cost" and i % 7 == 0 else "[]")
            )  # fmt: skip
    con = sqlite3.connect(db)
    with con:
        con.executemany(f"INSERT INTO requests VALUES ({', '.join('?' * 20)})", requests)
        con.executemany(
            "INSERT INTO verdicts (request_id, position, agent, target, allowed, confidence,"
            " state, reason, metrics, at, stale, neutral, denied_models)"
            f" VALUES ({', '.join('?' * 13)})",
            verdicts,
        )
    con.close()


async def bench(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "orchestra.db"
        async with SqliteStore(db):
            pass  # migrations
        t0 = time.perf_counter()
        fill(db, n)
        print(f"wrote {n} requests + {4 * n} verdicts in {time.perf_counter() - t0:.1f} s")
        catalog = Catalog(MODELS)
        default = resolve_policy(PolicyConfig(name="default"))
        muted = resolve_policy(PolicyConfig(name="default", weights={"complexity": 0.0}))
        async with SqliteStore(db) as store:
            for policies in ([default], [default, muted]):
                t0 = time.perf_counter()
                reports = await replay(store, catalog, policies)
                dt = time.perf_counter() - t0
                print(
                    f"{len(policies)} polic{'y' if len(policies) == 1 else 'ies'}: "
                    f"{reports[0].requests} requests in {dt:.2f} s = "
                    f"{reports[0].requests / dt:,.0f} requests/s "
                    f"({reports[0].requests * len(policies) / dt:,.0f} decisions/s); "
                    f"no allowed model: {[r.no_allowed_model for r in reports]}"
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=100_000)
    asyncio.run(bench(parser.parse_args().requests))
