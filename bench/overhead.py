"""Orchestra's overhead over a bare LiteLLM call, measured side by side in one run.

    python bench/overhead.py [--calls 1000] [--models 200] [--block 10]

Every path calls the same OpenAI-compatible stub on 127.0.0.1 (in its own process, as a
provider is), in short alternating blocks (`--block` calls of bare, then of each runtime, again
and again) so machine noise hits every path alike. Each block starts with one untimed call: a
bare LiteLLM call leaves its success logging (a task and a thread-pool job, ~0.3 ms) running
after it returns, and call-by-call interleaving charged that work to whichever call came next;
within a block each path carries its own leftovers, as it does in real use.
Orchestra calls such a server (`openai/...` with an `api_base`) through the OpenAI SDK itself,
not through LiteLLM (`orchestra/execution/openai_compatible.py`): the goal's ratio is to bare
`litellm.acompletion`, what a user would otherwise call; two more ratios show Orchestra's own
overhead, to a bare OpenAI SDK call and, for a model set `via_litellm`, to bare LiteLLM.
Orchestra runs its built-in agents, the default policy, and
records every request durably in SQLite before `complete()` returns (WAL, group commit, each
commit synced to the disk: `[store] sync = "full"`, the default). A third runtime is the same
with `sync = "normal"` (the commit left to the operating system), to show what the disk sync
costs a request made alone; a fourth, the budgeted runtime so (its reservation and its record
each unsynced).
A second runtime has a catalog of `--models` priced cloud models and a daily budget (every call
is reserved in the ledger before it is made). Prints p50/p99 of each and the ratios, plus the
routing cost alone (agents + policy, no call).
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

from openai import AsyncOpenAI, DefaultAioHttpClient
from stub_process import stub_process

from orchestra import Orchestra
from orchestra.config import parse_config
from orchestra.execution.litellm_backend import import_litellm

PROMPT = "What is the capital of France?"


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def catalog(url: str, models: int, *, via_litellm: bool = False) -> list[dict[str, object]]:
    """`models` priced cloud models, all served by the stub (the first is the cheapest)."""
    return [
        {
            "via_litellm": via_litellm,
            "name": "stub" if i == 0 else f"stub-{i}",
            "tier": "cloud",
            "litellm_model": "openai/stub",
            "api_base": url,
            "api_key_env": "BENCH_KEY",
            "input_cost_per_mtok": 0.15 * (1 + i / 10),
            "output_cost_per_mtok": 0.6 * (1 + i / 10),
        }
        for i in range(models)
    ]


async def bench(calls: int, models: int, block: int) -> None:
    litellm = import_litellm()
    os.environ["BENCH_KEY"] = "sk-bench-0123456789"
    with stub_process() as url, tempfile.TemporaryDirectory() as home:
        small = parse_config({"models": catalog(url, 1), "embedded": {"enabled": False}})
        unsynced = parse_config(
            {"models": catalog(url, 1), "embedded": {"enabled": False}, "store": {"sync": "normal"}}
        )
        big_table = {
            "models": catalog(url, models),
            "embedded": {"enabled": False},
            "budget": {"daily_usd": 1000.0},  # every call reserved in the ledger
        }
        through_litellm = parse_config(
            {"models": catalog(url, 1, via_litellm=True), "embedded": {"enabled": False}}
        )
        big = parse_config(big_table)
        big_unsynced = parse_config({**big_table, "store": {"sync": "normal"}})
        messages = [{"role": "user", "content": PROMPT}]

        async def bare() -> None:
            await litellm.acompletion(
                model="openai/stub", messages=messages, api_base=url,
                api_key=os.environ["BENCH_KEY"], timeout=60, max_retries=0,
            )  # fmt: skip

        # The client Orchestra calls such a server through (the OpenAI SDK on aiohttp), bare.
        sdk = AsyncOpenAI(base_url=url, api_key=os.environ["BENCH_KEY"], max_retries=0,
                          http_client=DefaultAioHttpClient())  # fmt: skip

        async def bare_sdk() -> None:
            await sdk.chat.completions.create(model="stub", messages=messages, timeout=60)  # type: ignore[arg-type]

        async with (
            Orchestra(small, db_path=Path(home) / "small.db") as orc,
            Orchestra(big, db_path=Path(home) / "big.db") as orc_big,
            Orchestra(unsynced, db_path=Path(home) / "unsynced.db") as orc_normal,
            Orchestra(big_unsynced, db_path=Path(home) / "big_unsynced.db") as orc_big_normal,
            Orchestra(through_litellm, db_path=Path(home) / "litellm.db") as orc_litellm,
            sdk,
        ):
            runtimes = (orc, orc_big, orc_normal, orc_big_normal, orc_litellm)
            for runtime in runtimes:
                await runtime.ready()
            for _ in range(50):  # warm every path: connection pools, caches, lazy imports
                await bare()
                await bare_sdk()
                for runtime in runtimes:
                    await runtime.complete(PROMPT)
            times: dict[str, list[float]] = {
                "bare": [], "sdk": [], "one": [], "big": [], "normal": [], "big_normal": [],
                "litellm": [], "route": [],
            }  # fmt: skip
            for _ in range(max(1, calls // block)):
                for name, call in (
                    ("bare", bare),
                    ("sdk", bare_sdk),
                    ("one", lambda: orc.complete(PROMPT)),
                    ("big", lambda: orc_big.complete(PROMPT)),
                    ("normal", lambda: orc_normal.complete(PROMPT)),
                    ("big_normal", lambda: orc_big_normal.complete(PROMPT)),
                    ("litellm", lambda: orc_litellm.complete(PROMPT)),
                ):
                    await call()  # takes the previous block's leftovers: not timed
                    for _ in range(block):
                        t = time.perf_counter()
                        await call()
                        times[name].append((time.perf_counter() - t) * 1000)
                for _ in range(block):
                    t = time.perf_counter()
                    await orc.decide(PROMPT)
                    times["route"].append((time.perf_counter() - t) * 1e6)
            await orc.flush()
            stored = len(await orc.history(limit=calls * 3))

    bare_ms = times["bare"]
    print(f"{len(bare_ms)} calls each, in alternating blocks of {block}, to a loopback stub"
          f" ({stored} requests stored)")  # fmt: skip
    print(f"{'':38}{'p50':>10}{'p99':>10}{'mean':>10}")
    rows = (
        ("bare litellm (ms)", bare_ms),
        ("bare openai SDK (ms)", times["sdk"]),
        ("orchestra, 1 model (ms)", times["one"]),
        (f"orchestra, {models} models + budget (ms)", times["big"]),
        ("orchestra, 1 model, sync=normal (ms)", times["normal"]),
        (f"orchestra, {models} + budget, normal (ms)", times["big_normal"]),
        ("orchestra, 1 model, via LiteLLM (ms)", times["litellm"]),
    )
    for name, xs in rows:
        print(f"{name:38}{pct(xs, 0.5):10.3f}{pct(xs, 0.99):10.3f}{statistics.fmean(xs):10.3f}")
    route = times["route"]
    print(f"{'routing only, 1 model (us)':38}{pct(route, 0.5):10.1f}{pct(route, 0.99):10.1f}"
          f"{statistics.fmean(route):10.1f}")  # fmt: skip
    print("ratio to bare litellm                  p50      p99     goal")
    ratios = (
        ("1 model", "one", "<= 1.03 / 1.05"),
        (f"{models} models + budget", "big", "<= 1.05"),
        ("1 model, sync=normal", "normal", "(no goal)"),
        (f"{models} models + budget, normal", "big_normal", "(no goal)"),
        ("1 model, via LiteLLM", "litellm", "(no goal)"),
    )
    for name, key, goal in ratios:
        xs = times[key]
        print(f"  {name:34}{pct(xs, 0.5) / pct(bare_ms, 0.5):8.3f} "
              f"{pct(xs, 0.99) / pct(bare_ms, 0.99):8.3f}     {goal}")  # fmt: skip
    sdk_ms = times["sdk"]
    print("Orchestra's own overhead: ratio to the bare client it calls through")
    for name, key, base in (
        ("1 model ÷ bare openai SDK", "one", sdk_ms),
        (f"{models} models + budget ÷ bare SDK", "big", sdk_ms),
        ("1 model, sync=normal ÷ bare SDK", "normal", sdk_ms),
        ("1 model via LiteLLM ÷ bare litellm", "litellm", bare_ms),
    ):
        xs = times[key]
        print(f"  {name:34}{pct(xs, 0.5) / pct(base, 0.5):8.3f} "
              f"{pct(xs, 0.99) / pct(base, 0.99):8.3f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--models", type=int, default=200, help="the big catalog's size")
    parser.add_argument("--block", type=int, default=10, help="timed calls per block")
    args = parser.parse_args()
    asyncio.run(bench(args.calls, args.models, args.block))


if __name__ == "__main__":
    main()
