"""Orchestra's overhead over a bare LiteLLM call, measured side by side in one run.

    python bench/overhead.py [--calls 1000]

Both paths call the same OpenAI-compatible stub on 127.0.0.1 through `litellm.acompletion`; the
calls are interleaved (bare, orchestra, bare, ...) so machine noise hits both alike. Orchestra runs
its four built-in agents, the default policy and records every request in SQLite (WAL, batched).
Prints p50/p99 of each and the ratios, plus the routing cost alone (agents + policy, no call).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

from orchestra import Orchestra
from orchestra.config import parse_config
from orchestra.execution.litellm_backend import import_litellm
from orchestra.testing import Behaviour, StubProvider

PROMPT = "What is the capital of France?"


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def bench(calls: int) -> None:
    litellm = import_litellm()
    os.environ["BENCH_KEY"] = "sk-bench-0123456789"
    with StubProvider(Behaviour(reply="Paris")) as stub, tempfile.TemporaryDirectory() as home:
        config = parse_config(
            {
                "models": [
                    {
                        "name": "stub",
                        "tier": "cloud",
                        "litellm_model": "openai/stub",
                        "api_base": stub.url,
                        "api_key_env": "BENCH_KEY",
                        "input_cost_per_mtok": 0.15,
                        "output_cost_per_mtok": 0.6,
                    }
                ],
                "embedded": {"enabled": False},
            }
        )
        messages = [{"role": "user", "content": PROMPT}]

        async def bare() -> None:
            await litellm.acompletion(
                model="openai/stub", messages=messages, api_base=stub.url,
                api_key=os.environ["BENCH_KEY"], timeout=60, max_retries=0,
            )  # fmt: skip

        async with Orchestra(config, db_path=Path(home) / "bench.db") as orc:
            for _ in range(50):  # warm both paths: connection pools, caches, lazy imports
                await bare()
                await orc.complete(PROMPT)
            bare_ms: list[float] = []
            orc_ms: list[float] = []
            route_us: list[float] = []
            for _ in range(calls):
                t = time.perf_counter()
                await bare()
                bare_ms.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                await orc.complete(PROMPT)
                orc_ms.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                await orc.decide(PROMPT)
                route_us.append((time.perf_counter() - t) * 1e6)
            await orc.flush()
            stored = len(await orc.history(limit=calls * 3))

    print(f"{calls} calls each, interleaved, to a loopback stub ({stored} requests stored)")
    print(f"{'':24}{'p50':>10}{'p99':>10}{'mean':>10}")
    for name, xs in (("bare litellm (ms)", bare_ms), ("orchestra (ms)", orc_ms)):
        print(f"{name:24}{pct(xs, 0.5):10.3f}{pct(xs, 0.99):10.3f}{statistics.fmean(xs):10.3f}")
    print(f"{'routing only (us)':24}{pct(route_us, 0.5):10.1f}{pct(route_us, 0.99):10.1f}"
          f"{statistics.fmean(route_us):10.1f}")  # fmt: skip
    print(f"ratio orchestra/bare: p50 {pct(orc_ms, 0.5) / pct(bare_ms, 0.5):.3f}, "
          f"p99 {pct(orc_ms, 0.99) / pct(bare_ms, 0.99):.3f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    asyncio.run(bench(parser.parse_args().calls))


if __name__ == "__main__":
    main()
