"""Orchestra's per-request overhead at two revisions, side by side in one run.

    python bench/versus.py --base aa63d43 [--runs 3] [--rounds 50]

Each revision is unpacked (`git archive`) into a temporary folder and measured in its own
process, the two alternating run by run, against one OpenAI-compatible stub in its own process
on 127.0.0.1: alternating blocks of 10 bare `litellm.acompletion` calls and 10 `complete()`
calls through a one-model runtime, each block after one untimed call (see bench/overhead.py).
Prints each run's p50 and p99 ratio to bare LiteLLM and the median per revision: "is this tree
slower than that one" on the same machine, minutes apart, with the same method.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

from stub_process import REPO, stub_process

# Runs inside each tree's process; imports what that tree calls its LiteLLM loader.
_MEASURE = r"""
import asyncio, os, sys, tempfile, time
from pathlib import Path
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
from orchestra import Orchestra
from orchestra.config import parse_config
try:
    from orchestra.execution.litellm_backend import import_litellm
except ImportError:  # before the layered layout
    from orchestra.litellm_backend import import_litellm

URL, ROUNDS, BLOCK, KEY = sys.argv[1], int(sys.argv[2]), 10, "sk-bench-0123456789"
PROMPT = "What is the capital of France?"

def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]

async def main():
    litellm = import_litellm()
    os.environ["BENCH_KEY"] = KEY
    model = {"name": "stub", "tier": "cloud", "litellm_model": "openai/stub", "api_base": URL,
             "api_key_env": "BENCH_KEY", "input_cost_per_mtok": 0.15, "output_cost_per_mtok": 0.6}
    config = parse_config({"models": [model], "embedded": {"enabled": False}})
    messages = [{"role": "user", "content": PROMPT}]

    async def bare():
        await litellm.acompletion(model="openai/stub", messages=messages, api_base=URL,
                                  api_key=KEY, timeout=60, max_retries=0)

    with tempfile.TemporaryDirectory() as home:
        async with Orchestra(config, db_path=Path(home) / "bench.db") as orc:
            if hasattr(orc, "ready"):
                await orc.ready()
            for _ in range(50):
                await bare()
                await orc.complete(PROMPT)
            times = {"bare": [], "orc": []}
            for _ in range(ROUNDS):
                for name, call in (("bare", bare), ("orc", lambda: orc.complete(PROMPT))):
                    await call()
                    for _ in range(BLOCK):
                        t = time.perf_counter()
                        await call()
                        times[name].append(time.perf_counter() - t)
    b, o = times["bare"], times["orc"]
    print(pct(o, 0.5) / pct(b, 0.5), pct(o, 0.99) / pct(b, 0.99))

asyncio.run(main())
"""


def unpack(rev: str, into: Path) -> Path:
    """The tree of `rev` (this repository's), unpacked into `into`."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", rev], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def measure(tree: Path, url: str, rounds: int) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, url, str(rounds)],
        env=env, cwd=tempfile.gettempdir(), capture_output=True, text=True, check=True,
    )  # fmt: skip
    p50, p99 = out.stdout.split()
    return float(p50), float(p99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the revision to compare with")
    parser.add_argument("--head", default="HEAD", help="the revision measured against it")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=50, help="blocks of 10 calls per run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, stub_process() as url:
        trees = {
            rev: unpack(rev, Path(tmp) / str(i)) for i, rev in enumerate((args.base, args.head))
        }
        ratios: dict[str, list[tuple[float, float]]] = {rev: [] for rev in trees}
        print(f"{'run':>4}  {'revision':<12}{'p50 ratio':>10}{'p99 ratio':>10}")
        for run in range(1, args.runs + 1):
            for rev, tree in trees.items():
                p50, p99 = measure(tree, url, args.rounds)
                ratios[rev].append((p50, p99))
                print(f"{run:>4}  {rev:<12}{p50:>10.3f}{p99:>10.3f}", flush=True)
        print("median")
        for rev, rs in ratios.items():
            p50 = statistics.median(r[0] for r in rs)
            p99 = statistics.median(r[1] for r in rs)
            print(f"{'':>4}  {rev:<12}{p50:>10.3f}{p99:>10.3f}")


if __name__ == "__main__":
    main()
