#!/usr/bin/env python3
"""Benchmark the privacy agent's scan against `str.lower()` on the same text.

Prints µs per check (p50/p99) for a short clean prompt, a 2 KB clean prompt, a 2 KB prompt
holding a key and a 100 KB prompt, each next to `str.lower()` as a yardstick ratio, for the
default agent (credentials) and for one scanning every built-in kind.

    python bench/privacy.py [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from orchestra import Request  # noqa: E402
from orchestra.agents.privacy import BUILTIN_KINDS, PrivacyAgent, find_kinds  # noqa: E402

# A code-ish vocabulary: digits, dots and words like "key"-free identifiers, as prompts have.
WORDS_TEXT = (
    "the a an of to in for on with by from function return value error list dict parse json "
    "file line user request model answer explain why how what when 3 10 2024 v1.2 step code "
    "test retry cache timeout server client python rust deploy build config update version"
)
WORDS = WORDS_TEXT.split(" ")
KEY = "sk-proj-Xy7kQ2mN9pL4vR8sT1wZ3bC6dF0gH5jK"


def prose(chars: int, seed: int) -> str:
    rng = random.Random(seed)
    out: list[str] = []
    size = 0
    while size < chars:
        word = rng.choice(WORDS)
        out.append(word)
        size += len(word) + 1
    return " ".join(out)[:chars]


def timed(fn: Callable[[], object], rounds: int) -> list[float]:
    """Microseconds per call, one sample per call (after a short warm-up)."""
    for _ in range(min(rounds, 50)):
        fn()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


async def timed_async(fn: Callable[[], Awaitable[object]], rounds: int) -> list[float]:
    """`timed` for a coroutine function, awaited in the running loop. A check that never suspends
    costs no more here than driven by hand; one that does (a long prompt goes to a worker thread
    via `asyncio.to_thread`, which needs a running loop) pays its real thread hop."""
    for _ in range(min(rounds, 50)):
        await fn()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        await fn()
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


def pct(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100)[int(q) - 1] if len(samples) > 1 else samples[0]


async def run(rounds: int) -> None:
    half = prose(1000, 2)
    cases = {
        "short clean (60 B)": "Explain why my Python function returns None instead of a list.",
        "2 KB clean": prose(2048, 1),
        "2 KB with a key": f"{half} my key is {KEY} {half}"[:2048],
        "100 KB clean": prose(100_000, 3),
    }
    agents = {"default": PrivacyAgent(), "all kinds": PrivacyAgent(kinds=list(BUILTIN_KINDS))}
    print(
        f"{'agent':10s} {'prompt':20s} {'check p50':>10s} {'check p99':>10s} {'scan p50':>9s} "
        f"{'lower p50':>10s} {'check/lower':>11s}  found"
    )
    for name, agent in agents.items():
        for label, text in cases.items():
            request = Request.of(text)
            verdict = await agent.check(request)
            n = rounds if len(text) < 10_000 else max(20, rounds // 20)
            check = await timed_async(lambda r=request, a=agent: a.check(r), n)
            scan = timed(lambda t=text, a=agent: find_kinds(t, a.kinds, a.patterns), n)
            lower = timed(lambda t=text: t.lower(), n)
            ratio = statistics.median(check) / statistics.median(lower)
            print(
                f"{name:10s} {label:20s} {pct(check, 50):9.1f}µ {pct(check, 99):9.1f}µ "
                f"{pct(scan, 50):8.1f}µ {pct(lower, 50):9.2f}µ {ratio:10.1f}x  "
                f"{verdict.metrics['kinds'] or 'clean'}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    asyncio.run(run(parser.parse_args().rounds))


if __name__ == "__main__":
    main()
