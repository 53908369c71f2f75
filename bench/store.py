"""The store's write path, measured: durable records per second, the latency a durable record
adds to one request, and budget reservations, side by side in one run.

    python bench/store.py [--records 3000]

"durable" awaits each record's commit (what `complete()` does: a returned answer is on disk);
"queued" only enqueues it (what it did before: fast, and lost on `kill -9`). Group commit: the
writers in flight together share one transaction, so throughput grows with concurrency while
a lone request waits for one commit.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from orchestra import (  # noqa: E402
    Attempt,
    Candidate,
    Decision,
    Request,
    Result,
    Tier,
    Verdict,
)
from orchestra.spend.ledger import Ask, Charge, Hold  # noqa: E402
from orchestra.store import RequestRecord, SqliteStore  # noqa: E402


def record() -> RequestRecord:
    """A realistic answered request: four verdicts, two attempts, one charge."""
    request = Request.of("What is the capital of France? Answer in one word.")
    decision = Decision(
        policy="default",
        candidates=(Candidate(model="cloud", tier=Tier.CLOUD),),
        reason="vote for cloud (cloud 0.90)",
        target=Tier.CLOUD,
    )
    verdicts = tuple(
        Verdict(agent=a, target=Tier.CLOUD, confidence=0.5, reason="fine", metrics={"x": 1.0})
        for a in ("resource", "connectivity", "cost", "complexity")
    )
    attempts = (Attempt(model="cloud", tier=Tier.CLOUD, ok=True, latency_ms=10.0),)
    result = Result(
        request_id=request.id, text="Paris", model="cloud", tier=Tier.CLOUD, cost_usd=1e-6,
        latency_ms=10.0, prompt_tokens=12, completion_tokens=1, decision=decision,
        verdicts=verdicts, attempts=attempts,
    )  # fmt: skip
    charge = Charge(model="cloud", tier=Tier.CLOUD, prompt_tokens=12, completion_tokens=1,
                    cost_usd=1e-6)  # fmt: skip
    return RequestRecord(
        request=request, verdicts=verdicts, decision=decision, result=result, attempts=attempts,
        created_at=time.time(), latency_ms=10.0, charges=(charge,),
    )  # fmt: skip


async def per_second(store: SqliteStore, n: int, writers: int, durable: bool) -> float:
    """Records per second with `writers` concurrent requests each writing n/writers records."""
    records = [record() for _ in range(n)]
    per = n // writers

    async def writer(chunk: list[RequestRecord]) -> None:
        for rec in chunk:
            done = store.record(rec)
            if durable:
                await done

    started = time.perf_counter()
    await asyncio.gather(*(writer(records[i * per : (i + 1) * per]) for i in range(writers)))
    if not durable:
        await store.flush()  # the same work, measured to its end
    return per * writers / (time.perf_counter() - started)


async def latencies(fn: Callable[[], Awaitable[object]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - started) * 1e6)
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as home:
        async with SqliteStore(Path(home) / "orchestra.db") as store:
            await per_second(store, 300, 1, True)  # warm up
            print(f"{n} records; SQLite WAL, synchronous=NORMAL, group commit\n")
            print(f"{'writers':>8} {'durable/s':>12} {'queued/s':>12}")
            for writers in (1, 4, 16, 64, 256):
                d = await per_second(store, n, writers, True)
                q = await per_second(store, n, writers, False)
                print(f"{writers:>8} {d:>12,.0f} {q:>12,.0f}")

            lone = await latencies(lambda: store.record(record()), 500)
            queued = await latencies(_enqueue(store), 500)
            await store.flush()
            print("\nP1 (one request at a time), the time writing its record adds (us):")
            print(f"  durable: p50 {pct(lone, 0.5):7.0f}  p99 {pct(lone, 0.99):7.0f}")
            print(f"  queued:  p50 {pct(queued, 0.5):7.0f}  p99 {pct(queued, 0.99):7.0f}")

            ask = Ask(model="cloud", tier=Tier.CLOUD, request_id="r", min_usd=1e-6,
                      want_usd=1e-5, daily_usd=1e9, monthly_usd=None, lease_s=60.0)  # fmt: skip

            async def reserve_release() -> None:
                held = await store.reserve(ask)
                assert isinstance(held, Hold)
                store.release(held)

            res = await latencies(reserve_release, 500)
            print("\nbudget reservation (reserve, then release), one at a time (us):")
            print(f"  p50 {pct(res, 0.5):7.0f}  p99 {pct(res, 0.99):7.0f}"
                  f"  mean {statistics.mean(res):7.0f}")  # fmt: skip
            started = time.perf_counter()
            await asyncio.gather(*(reserve_release() for _ in range(1000)))
            rate = 1000 / (time.perf_counter() - started)
            print(f"  1,000 at once: {rate:,.0f} reservations/s")


def _enqueue(store: SqliteStore) -> Callable[[], Awaitable[object]]:
    async def enqueue() -> None:
        store.record(record())

    return enqueue


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=3000)
    asyncio.run(main(parser.parse_args().records))
