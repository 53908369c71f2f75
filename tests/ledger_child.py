"""A process that shares a home with others, for the ledger's multi-process tests.

python ledger_child.py budget HOME N_REQUESTS BUDGET_USD [URL]   -> prints one JSON summary
python ledger_child.py stub HOME N_REQUESTS BUDGET_USD URL STUB_URL -> the same, through LiteLLM
                                                              to a StubProvider (see stub_cost)
python ledger_child.py breaker URL                          -> opens the breaker of "flaky"
python ledger_child.py loop HOME                           -> prints each request id once
                                                              its answer is returned
python ledger_child.py open HOME START_AT [URL]            -> opens the store at START_AT,
                                                              prints its budget zone
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from budget_helpers import WantsCloud

from orchestra import Orchestra, Request
from orchestra.config import Config, parse_config
from orchestra.core.result import Usage
from orchestra.execution.backend import Completion
from orchestra.spend.estimate import prompt_tokens
from orchestra.store import open_store
from orchestra.testing import Call, FunctionBackend

IN_PRICE, OUT_PRICE = 1.0, 2.0  # USD per million tokens
ANSWER_TOKENS = 10
PROMPT = "What is the capital of France?"


def call_cost() -> float:
    """What one paid call costs here: exactly what the guard reserves for it."""
    p = prompt_tokens(Request.of(PROMPT, max_tokens=ANSWER_TOKENS))
    return (p * IN_PRICE + ANSWER_TOKENS * OUT_PRICE) / 1e6


def stub_cost() -> float:
    """What one paid call to the stub costs: only answer tokens are priced, and the stub answers
    exactly `max_tokens` words (`STUB_REPLY`), so the bill is exactly what the guard reserved."""
    return ANSWER_TOKENS * OUT_PRICE / 1e6


STUB_REPLY = " ".join(["Paris"] * ANSWER_TOKENS)


def config(
    home: Path, budget_usd: float | None, url: str | None = None, stub_url: str | None = None
) -> Config:
    store: dict[str, Any] = {"path": str(home / "orchestra.db")}
    if url:
        store["url"] = url  # PostgreSQL: the processes share it (and the spill in home)
    if stub_url:
        via = {"api_base": stub_url, "api_key_env": "STUB_API_KEY"}
        return parse_config(
            {
                "embedded": {"enabled": False},
                "health": {"enabled": False},
                "store": store,
                "budget": {"daily_usd": budget_usd} if budget_usd is not None else {},
                "models": [
                    {"name": "paid", "tier": "cloud", "litellm_model": "openai/paid", **via,
                     "input_cost_per_mtok": 0.0, "output_cost_per_mtok": OUT_PRICE},
                    {"name": "free", "tier": "local", "litellm_model": "openai/free", **via,
                     "input_cost_per_mtok": 0.0, "output_cost_per_mtok": 0.0},
                ],
            }
        )  # fmt: skip
    return parse_config(
        {
            "embedded": {"enabled": False},
            "health": {"enabled": False},
            "store": store,
            "budget": {"daily_usd": budget_usd} if budget_usd is not None else {},
            "models": [
                {"name": "paid", "tier": "cloud", "litellm_model": "openai/paid",
                 "input_cost_per_mtok": IN_PRICE, "output_cost_per_mtok": OUT_PRICE},
                {"name": "free", "tier": "local", "litellm_model": "openai/free",
                 "input_cost_per_mtok": 0.0, "output_cost_per_mtok": 0.0},
            ],
        }
    )  # fmt: skip


def exact(call: Call) -> Completion:
    """An honest provider that bills exactly the estimate the guard reserved."""
    request = Request.of([m.model_dump() for m in call.messages])
    prompt, answer = prompt_tokens(request), call.params.max_tokens or ANSWER_TOKENS
    cost = (
        prompt * (call.spec.input_cost_per_mtok or 0)
        + answer * (call.spec.output_cost_per_mtok or 0)
    ) / 1e6
    return Completion(
        text="Paris " * answer,
        usage=Usage(prompt_tokens=prompt, completion_tokens=answer, cost_usd=cost),
    )


async def budget(
    home: Path, n: int, budget_usd: float, url: str | None = None, stub_url: str | None = None
) -> None:
    backend = None if stub_url else FunctionBackend(exact)  # None: LiteLLM, over HTTP
    conf = config(home, budget_usd, url, stub_url)
    async with Orchestra(conf, agents=[WantsCloud()], backend=backend) as orc:
        results = await asyncio.gather(
            *(orc.complete(PROMPT, max_tokens=ANSWER_TOKENS) for _ in range(n))
        )
    summary: dict[str, Any] = {
        "paid": sum(r.model == "paid" for r in results),
        "answered": len(results),
        "cost": sum(r.cost_usd for r in results),
    }
    print(json.dumps(summary), flush=True)


async def loop(home: Path) -> None:
    backend = FunctionBackend(exact)
    async with Orchestra(config(home, None), agents=[WantsCloud()], backend=backend) as orc:

        async def worker(w: int) -> None:
            i = 0
            while True:
                result = await orc.complete(f"{PROMPT} ({w}.{i})", max_tokens=ANSWER_TOKENS)
                print(result.request_id, flush=True)  # returned: it must be on disk
                i += 1

        await asyncio.gather(*(worker(w) for w in range(8)))


async def open_breaker(url: str) -> None:
    """Fail once on "flaky" (threshold 1): its breaker opens, and is saved as the store closes."""
    from test_shared_breakers import config as breaker_config
    from test_shared_breakers import down

    conf = breaker_config(Path("unused.db"))
    conf = conf.model_copy(update={"store": conf.store.model_copy(update={"url": url})})
    async with Orchestra(conf, agents=[], backend=FunctionBackend(down)) as orc:
        result = await orc.complete("hello")
    print(json.dumps([a.error_kind for a in result.attempts]), flush=True)


async def open_at(home: Path, start_at: float, url: str | None) -> None:
    await asyncio.sleep(max(0.0, start_at - time.time()))
    async with open_store(url or home / "orchestra.db", home=home) as store:
        print(store.calendar.timezone, flush=True)


def main() -> None:
    mode, home = sys.argv[1], Path(sys.argv[2])
    if mode == "budget":
        url = sys.argv[5] if len(sys.argv) > 5 else None
        asyncio.run(budget(home, int(sys.argv[3]), float(sys.argv[4]), url))
    elif mode == "stub":
        args = sys.argv[3:7]
        asyncio.run(budget(home, int(args[0]), float(args[1]), args[2], args[3]))
    elif mode == "breaker":
        asyncio.run(open_breaker(sys.argv[2]))
    elif mode == "loop":
        asyncio.run(loop(home))
    elif mode == "open":
        asyncio.run(open_at(home, float(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
