"""The cost of turning a request's record into its rows (`record_rows`, on the store's writer
before every commit), with a small catalog and with 200 models and a budget.

    python bench/record_encode.py [--requests 1000]

The records are real: N prompts (as `record_size.py`) answered through a runtime to a stub,
each record captured as the store received it. Then `record_rows` runs over them five times,
each with a fresh interner; printed: microseconds per record, the best and the median pass.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from record_size import REPO, models, prompts  # also puts the repository on the path
from stub_process import stub_process

import orchestra.store.sqlite as sqlite_store
from orchestra import Orchestra
from orchestra.config import parse_config
from orchestra.store.detail import Interner
from orchestra.store.record import RequestRecord, record_rows

assert str(REPO) in sys.path


async def capture(url: str, n_models: int, budget: bool, texts: list[str]) -> list[Any]:
    """The records the store is given for `texts`."""
    seen: list[RequestRecord] = []
    real = sqlite_store.record_rows

    def spy(rec: RequestRecord, interner: Interner) -> Any:
        seen.append(rec)
        return real(rec, interner)

    sqlite_store.record_rows = spy  # type: ignore[assignment]
    try:
        config: dict[str, Any] = {"models": models(url, n_models), "embedded": {"enabled": False}}
        if budget:
            config["budget"] = {"daily_usd": 1000.0}
        with tempfile.TemporaryDirectory() as home:
            async with Orchestra(parse_config(config), db_path=Path(home) / "o.db") as orc:
                for text in texts:
                    await orc.complete(text, max_tokens=16)
                await orc.flush()
    finally:
        sqlite_store.record_rows = real
    return seen


def per_record_us(records: list[RequestRecord], passes: int = 5) -> list[float]:
    out = []
    for _ in range(passes):
        interner = Interner()
        start = time.perf_counter()
        for rec in records:
            record_rows(rec, interner)
        out.append((time.perf_counter() - start) / len(records) * 1e6)
    return out


def main(n: int) -> None:
    texts = prompts(n)
    with stub_process() as url:
        print(f"record_rows over {len(texts)} captured records (us per record)")
        print(f"{'catalog':>22} {'best':>8} {'median':>8}")
        for label, n_models, budget in (("3 models", 3, False), ("200 models + budget", 200, True)):
            times = per_record_us(asyncio.run(capture(url, n_models, budget, texts)))
            print(f"{label:>22} {min(times):>8.1f} {statistics.median(times):>8.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    main(parser.parse_args().requests)
