"""Throughput under load: 1,000 concurrent requests through Orchestra vs bare LiteLLM, side by
side in one run, and again after 100,000 paid requests are on the ledger.

    python bench/throughput.py [--concurrent 1000] [--rounds 3] [--history 100000]

A last row repeats the rounds with the heap built at start-up frozen (`gc.freeze()`, as
`orchestra serve` does in its workers), for both paths.

The provider is an OpenAI-compatible stub in its own process on 127.0.0.1 (in this process it
would share the GIL with the client). Rounds alternate bare, Orchestra, bare... The goal's ratio
is to bare LiteLLM (what a user would otherwise call); Orchestra calls this server through the
OpenAI SDK on aiohttp, whose bare rate is the last column (Orchestra's own cost under load).
Orchestra runs its default agents, the default policy, a daily budget (so every call is reserved
in the ledger and settled) and records every request durably before answering it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ["BENCH_KEY"] = "sk-bench-0123456789"

from openai import AsyncOpenAI, DefaultAioHttpClient  # noqa: E402
from stub_process import stub_process  # noqa: E402

from orchestra import Orchestra, Request, Tier  # noqa: E402
from orchestra.config import parse_config  # noqa: E402
from orchestra.execution.litellm_backend import import_litellm  # noqa: E402
from orchestra.spend.ledger import Charge  # noqa: E402
from orchestra.store import RequestRecord, SqliteStore  # noqa: E402

GOAL = 0.97
PROMPT = "What is the capital of France?"


async def paid_history(db: Path, n: int) -> None:
    """`n` paid requests on the ledger (queued through the store's record path)."""
    async with SqliteStore(db) as store:
        for i in range(n):
            request = Request.of(f"past question {i}")
            charge = Charge(model="cloud", tier=Tier.CLOUD, prompt_tokens=20,
                            completion_tokens=5, cost_usd=1e-7)  # fmt: skip
            store.record(
                RequestRecord(request=request, verdicts=(), decision=None, result=None,
                              created_at=time.time(), latency_ms=1.0, charges=(charge,))
            )  # fmt: skip
            if i % 5000 == 0:
                await store.flush()
        await store.flush()


async def rounds(
    url: str, home: Path, concurrent: int, n_rounds: int, frozen: bool = False
) -> tuple[float, float, float]:
    litellm = import_litellm()
    config = parse_config(
        {
            "models": [{"name": "cloud", "tier": "cloud", "litellm_model": "openai/stub",
                        "api_base": url, "api_key_env": "BENCH_KEY", "timeout_s": 120,
                        "input_cost_per_mtok": 0.15, "output_cost_per_mtok": 0.6}],
            "embedded": {"enabled": False},
            "budget": {"daily_usd": 1000.0},
            "request_timeout_s": 300,
            "store": {"path": str(home / "orchestra.db")},
        }
    )  # fmt: skip
    messages = [{"role": "user", "content": PROMPT}]

    async def bare() -> None:
        await litellm.acompletion(model="openai/stub", messages=messages, api_base=url,
                                  api_key=os.environ["BENCH_KEY"], timeout=120,
                                  max_retries=0)  # fmt: skip

    # The client Orchestra calls such a server through (the OpenAI SDK on aiohttp), bare.
    sdk = AsyncOpenAI(base_url=url, api_key=os.environ["BENCH_KEY"], max_retries=0,
                      http_client=DefaultAioHttpClient())  # fmt: skip

    async def bare_sdk() -> None:
        await sdk.chat.completions.create(model="stub", messages=messages, timeout=120)  # type: ignore[arg-type]

    bare_rates, sdk_rates, orc_rates = [], [], []
    async with Orchestra(config) as orc, sdk:
        await orc.ready()
        await asyncio.gather(
            *(bare() for _ in range(50)), *(orc.complete(PROMPT) for _ in range(50)),
            *(bare_sdk() for _ in range(50)),
        )  # fmt: skip
        if frozen:  # what `orchestra serve` does once started (see `server.app._settle_heap`)
            gc.collect()
            gc.freeze()
        for _ in range(n_rounds):
            t = time.perf_counter()
            await asyncio.gather(*(bare() for _ in range(concurrent)))
            bare_rates.append(concurrent / (time.perf_counter() - t))
            t = time.perf_counter()
            await asyncio.gather(*(orc.complete(PROMPT) for _ in range(concurrent)))
            orc_rates.append(concurrent / (time.perf_counter() - t))
            t = time.perf_counter()
            await asyncio.gather(*(bare_sdk() for _ in range(concurrent)))
            sdk_rates.append(concurrent / (time.perf_counter() - t))
    if frozen:
        gc.unfreeze()
    return (
        statistics.median(bare_rates),
        statistics.median(orc_rates),
        statistics.median(sdk_rates),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrent", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--history", type=int, default=100_000)
    args = parser.parse_args()
    with stub_process() as url, tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        print(f"{args.concurrent} concurrent requests, median of {args.rounds} rounds")
        print(f"{'ledger':>22} {'bare req/s':>12} {'orchestra':>12} {'ratio':>7}  goal"
              f"      {'bare SDK':>9} {'÷ SDK':>6}")  # fmt: skip
        for label in ("empty", f"{args.history:,} paid rows"):
            if label != "empty":
                asyncio.run(paid_history(home / "orchestra.db", args.history))
            b, o, k = asyncio.run(rounds(url, home, args.concurrent, args.rounds))
            print(f"{label:>22} {b:>12,.0f} {o:>12,.0f} {o / b:>7.2f}  >= {GOAL}"
                  f"   {k:>9,.0f} {o / k:>6.2f}")  # fmt: skip
        # The same, with what start-up built (LiteLLM's tables above all) frozen out of the
        # cyclic collector's passes, for both paths: how much of the gap is the collector
        # walking a heap that more objects in flight make it walk more often.
        b, o, k = asyncio.run(rounds(url, home, args.concurrent, args.rounds, frozen=True))
        print(f"{'same, heap frozen':>22} {b:>12,.0f} {o:>12,.0f} {o / b:>7.2f}  (no goal)"
              f"  {k:>9,.0f} {o / k:>6.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
