"""Time to an answer when the first candidate fails, against a call straight to the healthy one.

    python bench/failover.py [--calls 200]

Three scenarios, each measured side by side (interleaved) with Orchestra calling the healthy
stub directly (`model=` forced): the first candidate refuses connections, times out (a stub that
never answers, 0.2 s attempt timeout), or has an open circuit breaker. Prints p50 of each and the
ratio to the direct call. Retries are off (one attempt per model) so the cost of one failover is
what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from orchestra import Orchestra
from orchestra.config import parse_config
from orchestra.testing import Behaviour, StubProvider, refused_url


def model(name: str, url: str, timeout_s: float = 10.0) -> dict[str, object]:
    return {
        "name": name, "tier": "cloud", "litellm_model": f"openai/{name}", "api_base": url,
        "api_key_env": "BENCH_KEY", "input_cost_per_mtok": 0.1, "output_cost_per_mtok": 0.1,
        "timeout_s": timeout_s,
    }  # fmt: skip


async def scenario(name: str, first: dict[str, object], healthy: str, calls: int) -> None:
    config = parse_config(
        {
            "models": [first, model("healthy", healthy)],
            "embedded": {"enabled": False},
            "retry": {"attempts_per_model": 1},
            # Only the breaker scenario may trip a breaker; the others measure the failure itself.
            "breaker": (
                {"failure_threshold": 1}
                if name == "breaker open"
                else {"failure_threshold": 10**6, "window": 20, "min_calls": 10**6}
            ),
        }
    )
    with tempfile.TemporaryDirectory() as home:
        async with Orchestra(config, agents=[], db_path=Path(home) / "b.db") as orc:
            for _ in range(5):
                await orc.complete("warm up")
                await orc.complete("warm up", model="healthy")
            direct, failover = [], []
            for _ in range(calls):
                t = time.perf_counter()
                await orc.complete("hello", model="healthy")
                direct.append(time.perf_counter() - t)
                t = time.perf_counter()
                result = await orc.complete("hello")
                failover.append(time.perf_counter() - t)
                assert result.model == "healthy"
    d, f = sorted(direct)[len(direct) // 2] * 1000, sorted(failover)[len(failover) // 2] * 1000
    print(f"{name:22}{d:12.2f}{f:14.2f}{f / d:10.2f}")


async def bench(calls: int) -> None:
    os.environ["BENCH_KEY"] = "sk-bench-0123456789"
    with (
        StubProvider(Behaviour(reply="Paris")) as healthy,
        StubProvider(Behaviour(kind="hang")) as hang,
    ):
        print(f"p50 over {calls} calls each, interleaved")
        print(f"{'first candidate':22}{'direct ms':>12}{'failover ms':>14}{'ratio':>10}")
        await scenario("refuses connections", model("gone", refused_url()), healthy.url, calls)
        await scenario(
            "times out (0.2 s)", model("hung", hang.url, 0.2), healthy.url, max(10, calls // 10)
        )
        await scenario("breaker open", model("dead", refused_url()), healthy.url, calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    asyncio.run(bench(parser.parse_args().calls))


if __name__ == "__main__":
    main()
