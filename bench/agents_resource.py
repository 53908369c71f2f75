#!/usr/bin/env python3
"""Benchmark the resource agent: what one sample costs the event loop, and the request path.

Prints, p50/p99 over N samples (1,000 by default):
- loop time per sample: CPU time the event-loop thread spends on one `check` (scheduling the
  worker hop, smoothing, judging, building the verdict), the worker thread's reads excluded;
- total time per sample: wall time of one `check`, worker thread included;
- worker time per sample: the blocking psutil/NVML reads alone, timed inside the thread;
- the floor: loop time of a bare `asyncio.to_thread` hop to a no-op;
- the request path: reading the cached verdict through `AgentPanel.verdicts`, and `judge` alone.

    python bench/agents_resource.py [-n 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from orchestra import AgentContext, Budget, Catalog, ModelSpec, Request, Tier  # noqa: E402
from orchestra.agents.panel import AgentPanel  # noqa: E402
from orchestra.agents.resource import Reading, ResourceAgent  # noqa: E402
from orchestra.spend.tracker import SpendTracker  # noqa: E402


def context() -> AgentContext:
    tiny = ModelSpec(name="tiny", tier=Tier.LOCAL, litellm_model="ollama/tiny", size_mb=270.0)
    return AgentContext(catalog=Catalog([tiny]), budget=Budget(), spend=SpendTracker.seeded(0, 0))


def pcts(samples_us: list[float]) -> str:
    q = statistics.quantiles(samples_us, n=100, method="inclusive")
    return f"p50 {q[49]:8.1f} us   p99 {q[98]:8.1f} us"


async def sample_costs(n: int) -> tuple[list[float], list[float], list[float]]:
    agent = ResourceAgent()
    await agent.start(context())
    worker: list[float] = []
    read = agent.read

    def timed_read() -> Reading:  # the worker thread's own share, for the record
        t0 = time.perf_counter()
        try:
            return read()
        finally:
            worker.append((time.perf_counter() - t0) * 1e6)

    agent.read = timed_read  # type: ignore[method-assign]
    loop_us: list[float] = []
    total_us: list[float] = []
    try:
        for _ in range(20):  # warm the thread pool and the code paths
            await agent.check(None)
        worker.clear()
        for _ in range(n):
            # thread_time counts only this (the loop's) thread's CPU: while the loop waits in
            # epoll for the worker it burns none, so this is the sample's cost to the loop.
            c0, w0 = time.thread_time(), time.perf_counter()
            await agent.check(None)
            loop_us.append((time.thread_time() - c0) * 1e6)
            total_us.append((time.perf_counter() - w0) * 1e6)
    finally:
        await agent.stop()
    return loop_us, total_us, worker


async def request_path_costs(n: int) -> tuple[list[float], list[float]]:
    panel = AgentPanel([ResourceAgent(interval=3600.0)])  # sampled once at start, then cached
    await panel.start(context())
    request = Request.of("hi")
    cached: list[float] = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            await panel.verdicts(request)
            cached.append((time.perf_counter() - t0) * 1e6)
    finally:
        await panel.stop()
    agent = ResourceAgent()
    reading = Reading(cpu_percent=42.0, ram_percent=60.0, load_1m=0.8, ram_available_mb=8e3)
    judged = timeit(lambda: agent.judge(reading), n)
    return cached, judged


async def bare_hop_costs(n: int) -> list[float]:
    """Loop CPU of one `asyncio.to_thread` hop to a no-op: the floor any threaded sample pays."""
    out = []
    for _ in range(n):
        c0 = time.thread_time()
        await asyncio.to_thread(int)
        out.append((time.thread_time() - c0) * 1e6)
    return out


def timeit(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e6)
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="samples per measurement")
    n = parser.parse_args().n
    loop_us, total_us, worker_us = await sample_costs(n)
    cached_us, judge_us = await request_path_costs(n)
    hop_us = await bare_hop_costs(n)
    print(f"resource agent, {n} samples each")
    print(f"  loop time per sample     {pcts(loop_us)}   (event-loop thread CPU)")
    print(f"    of which the bare hop  {pcts(hop_us)}   (to_thread of a no-op)")
    print(f"  total time per sample    {pcts(total_us)}   (wall, worker thread included)")
    print(f"  worker reads per sample  {pcts(worker_us)}   (psutil + NVML, in the thread)")
    print(f"  request path: cached     {pcts(cached_us)}   (AgentPanel.verdicts)")
    print(f"  judge alone              {pcts(judge_us)}")
    ratio = statistics.median(total_us) / statistics.median(cached_us)
    print(f"  a sample costs {ratio:.0f}x a cached read; requests only ever do the cached read")


if __name__ == "__main__":
    asyncio.run(main())
