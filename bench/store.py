"""The store's write path, measured: durable records per second, the latency a durable record
adds to one request, and budget reservations, side by side in one run; then SQLite against
PostgreSQL, in one process and in four sharing the store, with ratios.

    python bench/store.py [--records 3000] [--pg-url postgresql://...]

Without --pg-url (or $ORCHESTRA_PG_URL) a throwaway PostgreSQL server is started with initdb and
pg_ctl in a temporary folder (its defaults: fsync on, synchronous_commit on; SQLite runs WAL with
synchronous=FULL, Orchestra's default), and stopped at the end.

"durable" awaits each record's commit (what `complete()` does: a returned answer is on disk);
"queued" only enqueues it (what it did before: fast, and lost on `kill -9`). Group commit: the
writers in flight together share one transaction, so throughput grows with concurrency while
a lone request waits for one commit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
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
from orchestra.store import RequestRecord, SqliteStore, Store, open_store  # noqa: E402


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


async def per_second(store: Store, n: int, writers: int, durable: bool) -> float:
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


ASK = Ask(model="cloud", tier=Tier.CLOUD, request_id="r", min_usd=1e-6, want_usd=1e-5,
          daily_usd=1e9, monthly_usd=None, lease_s=60.0)  # fmt: skip


async def reserve_release(store: Store) -> None:
    held = await store.reserve(ASK)
    assert isinstance(held, Hold)
    store.release(held)


async def sqlite_detail(n: int) -> None:
    """The SQLite store alone: throughput by concurrency, lone latency, reservations; each
    commit synced to the disk (`sync = "full"`, the default) and left to the OS ("normal")."""
    with tempfile.TemporaryDirectory() as home:
        async with (
            SqliteStore(Path(home) / "full.db") as store,
            SqliteStore(Path(home) / "normal.db", sync="normal") as unsynced,
        ):
            await per_second(store, 300, 1, True)  # warm up
            await per_second(unsynced, 300, 1, True)
            print(f"{n} records; SQLite WAL, group commit; durable: each commit synced to the disk")
            print("(sync = full, the default) or handed to the OS (sync = normal)\n")
            print(f"{'writers':>8} {'durable/s':>12} {'normal/s':>12} {'queued/s':>12}")
            for writers in (1, 4, 16, 64, 256):
                d = await per_second(store, n, writers, True)
                u = await per_second(unsynced, n, writers, True)
                q = await per_second(store, n, writers, False)
                print(f"{writers:>8} {d:>12,.0f} {u:>12,.0f} {q:>12,.0f}")

            lone = await latencies(lambda: store.record(record()), 500)
            lone_normal = await latencies(lambda: unsynced.record(record()), 500)
            queued = await latencies(_enqueue(store), 500)
            await store.flush()
            print("\nP1 (one request at a time), the time writing its record adds (us):")
            print(f"  durable: p50 {pct(lone, 0.5):7.0f}  p99 {pct(lone, 0.99):7.0f}")
            print(f"  normal:  p50 {pct(lone_normal, 0.5):7.0f}  p99 {pct(lone_normal, 0.99):7.0f}")
            print(f"  queued:  p50 {pct(queued, 0.5):7.0f}  p99 {pct(queued, 0.99):7.0f}")

            res = await latencies(lambda: reserve_release(store), 500)
            print("\nbudget reservation (reserve, then release), one at a time (us):")
            print(f"  p50 {pct(res, 0.5):7.0f}  p99 {pct(res, 0.99):7.0f}"
                  f"  mean {statistics.mean(res):7.0f}")  # fmt: skip
            started = time.perf_counter()
            await asyncio.gather(*(reserve_release(store) for _ in range(1000)))
            rate = 1000 / (time.perf_counter() - started)
            print(f"  1,000 at once: {rate:,.0f} reservations/s")


def _enqueue(store: Store) -> Callable[[], Awaitable[object]]:
    async def enqueue() -> None:
        store.record(record())

    return enqueue


async def measure(
    location: str, home: str, n: int, writers: int, start_at: float
) -> dict[str, float]:
    """One process's numbers on a store: durable records/s with `writers` in flight, and the
    latency of reserve+release one at a time (us)."""
    async with open_store(location, home=Path(home)) as store:
        await per_second(store, 200, 8, True)  # warm up (connections, statements)
        await asyncio.sleep(max(0.0, start_at - time.time()))
        started = time.perf_counter()
        rate = await per_second(store, n, writers, True)
        elapsed = time.perf_counter() - started
        res = await latencies(lambda: reserve_release(store), 300)
    return {"rate": rate, "elapsed": elapsed, "records": n, "p50": pct(res, 0.5),
            "p99": pct(res, 0.99)}  # fmt: skip


def run_processes(location: str, home: str, n: int, writers: int, procs: int) -> dict[str, float]:
    """`procs` processes on one store at once: their records/s together, reservations p50/p99."""
    start_at = time.time() + 3.0
    cmd = [sys.executable, __file__, "--worker", location, home, str(n), str(writers),
           str(start_at)]  # fmt: skip
    children = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(procs)]
    outs = [json.loads(c.communicate(timeout=600)[0]) for c in children]
    slowest = max(o["elapsed"] for o in outs)
    return {"rate": sum(o["records"] for o in outs) / slowest,
            "p50": statistics.median(o["p50"] for o in outs),
            "p99": max(o["p99"] for o in outs)}  # fmt: skip


@contextlib.contextmanager
def postgres_server(url: str | None) -> Iterator[str]:
    """The given server, or a throwaway one (initdb + pg_ctl; as `postgres` when root)."""
    if url:
        yield url
        return
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    bindir = Path(shutil.which("initdb") or (found[-1] if found else "")).parent
    if not (bindir / "initdb").exists():
        raise SystemExit("no PostgreSQL: install it, or pass --pg-url")
    base = Path(tempfile.mkdtemp(prefix="orchestra-bench-pg-"))
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_pg:
        shutil.chown(base, "postgres")
    run = lambda *a: subprocess.run([*as_pg, str(bindir / a[0]), *a[1:]], check=True,  # noqa: E731
                                    capture_output=True)  # fmt: skip
    run("initdb", "-D", str(base / "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    run("pg_ctl", "-D", str(base / "data"), "-l", str(base / "log"), "-w", "-o",
        f"-k {base} -c listen_addresses='' -c max_connections=100", "start")  # fmt: skip
    try:
        yield f"postgresql://postgres@/postgres?host={base}"
    finally:
        run("pg_ctl", "-D", str(base / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


async def fresh_database(admin_url: str, name: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return admin_url.replace("/postgres?", f"/{name}?", 1)


def side_by_side(n: int, pg_admin: str) -> None:
    print("\nSQLite vs PostgreSQL: durable records/s (64 requests in flight per process) and")
    print("reservation latency (reserve + release, one at a time, us); fresh store each row\n")
    print(f"{'':>12} {'backend':>10} {'records/s':>11} {'res p50':>9} {'res p99':>9}")
    for procs in (1, 4):
        got: dict[str, dict[str, float]] = {}
        for backend in ("sqlite", "postgres"):
            with tempfile.TemporaryDirectory() as home:
                if backend == "sqlite":
                    location = str(Path(home) / "orchestra.db")
                else:
                    location = asyncio.run(fresh_database(pg_admin, f"bench_{procs}"))
                if procs == 1:
                    got[backend] = asyncio.run(measure(location, home, n, 64, time.time()))
                else:
                    got[backend] = run_processes(location, home, n // procs, 64, procs)
            g = got[backend]
            label = f"{procs} process" + ("es" if procs > 1 else "")
            print(
                f"{label:>12} {backend:>10} {g['rate']:>11,.0f} {g['p50']:>9.0f} {g['p99']:>9.0f}"
            )
        lite, pg = got["sqlite"], got["postgres"]
        print(f"{'':>12} {'pg/sqlite':>10} {pg['rate'] / lite['rate']:>10.2f}x"
              f" {pg['p50'] / lite['p50']:>8.2f}x {pg['p99'] / lite['p99']:>8.2f}x")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("ORCHESTRA_PG_URL"),
        help="a server to create bench databases on (default: start one)",
    )
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        location, home, n, writers, start_at = args.worker
        out = asyncio.run(measure(location, home, int(n), int(writers), float(start_at)))
        print(json.dumps(out))
        return
    asyncio.run(sqlite_detail(args.records))
    with postgres_server(args.pg_url) as admin:
        side_by_side(args.records, admin)


if __name__ == "__main__":
    main()
