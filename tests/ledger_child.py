"""A process that shares a home with others, for the ledger's multi-process tests.

python ledger_child.py budget HOME N_REQUESTS BUDGET_USD [URL [GATE]]
                                                           -> prints one JSON summary (with GATE,
                                                              a folder: once started, says so
                                                              there and waits for GATE/go)
python ledger_child.py stub HOME N_REQUESTS BUDGET_USD URL STUB_URL -> the same, through LiteLLM
                                                              to a StubProvider (see stub_cost)
python ledger_child.py breaker URL                          -> opens the breaker of "flaky"
python ledger_child.py loop HOME                           -> prints each request id once
                                                              its answer is returned
python ledger_child.py open HOME START_AT [URL]            -> opens the store at START_AT,
                                                              prints its budget zone
python ledger_child.py hold HOME URL USD LEASE_S           -> reserves USD of a $1 daily budget
                                                              on PostgreSQL, prints the hold's id,
                                                              then waits (to be killed)
python ledger_child.py chosen HOME ID N [URL]              -> N calls under the chosen id ID;
                                                              prints [{id, cost}] as returned
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
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


def outputs(children: list[subprocess.Popen[str]]) -> list[Any]:
    """What each child printed (JSON), once each has exited cleanly (for the parent test)."""
    out = []
    for child in children:
        text, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        out.append(json.loads(text))
    return out


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
    home: Path,
    n: int,
    budget_usd: float,
    url: str | None = None,
    stub_url: str | None = None,
    gate: Path | None = None,
) -> None:
    backend = None if stub_url else FunctionBackend(exact)  # None: LiteLLM, over HTTP
    conf = config(home, budget_usd, url, stub_url)
    async with Orchestra(conf, agents=[WantsCloud()], backend=backend) as orc:
        if gate is not None:  # every process started before any spends
            await orc.ready()
            (gate / f"ready.{os.getpid()}").touch()
            while not (gate / "go").exists():  # noqa: ASYNC110  (another process's file)
                await asyncio.sleep(0.02)
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


async def chosen(home: Path, rid: str, n: int, url: str | None) -> None:
    """`n` calls at once, each asking for the id `rid` (as other processes do meanwhile)."""
    async with Orchestra(config(home, None, url), agents=[WantsCloud()],
                         backend=FunctionBackend(exact)) as orc:  # fmt: skip
        results = await asyncio.gather(
            *(orc.complete(PROMPT, max_tokens=ANSWER_TOKENS, id=rid) for _ in range(n))
        )
    print(json.dumps([{"id": r.request_id, "cost": r.cost_usd} for r in results]), flush=True)


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


async def hold(home: Path, url: str, usd: float, lease_s: float) -> None:
    from orchestra.core.tier import Tier
    from orchestra.spend.ledger import Ask
    from orchestra.store import open_store

    store = await open_store(url, home=home).open()
    ask = Ask(model="c1", tier=Tier.CLOUD, request_id="killed", min_usd=usd, want_usd=usd,
              daily_usd=1.0, monthly_usd=None, lease_s=lease_s)  # fmt: skip
    got = await store.reserve(ask)
    print(json.dumps({"degraded": getattr(store, "degraded", None), "hold": got.id
                      if hasattr(got, "id") else None}), flush=True)  # fmt: skip
    await asyncio.sleep(3600)


def main() -> None:
    mode, home = sys.argv[1], Path(sys.argv[2])
    if mode == "budget":
        url = sys.argv[5] if len(sys.argv) > 5 else None
        gate = Path(sys.argv[6]) if len(sys.argv) > 6 else None
        asyncio.run(budget(home, int(sys.argv[3]), float(sys.argv[4]), url, gate=gate))
    elif mode == "stub":
        args = sys.argv[3:7]
        asyncio.run(budget(home, int(args[0]), float(args[1]), args[2], args[3]))
    elif mode == "breaker":
        asyncio.run(open_breaker(sys.argv[2]))
    elif mode == "loop":
        asyncio.run(loop(home))
    elif mode == "chosen":
        url = sys.argv[5] if len(sys.argv) > 5 and sys.argv[5] else None
        asyncio.run(chosen(home, sys.argv[3], int(sys.argv[4]), url))
    elif mode == "open":
        asyncio.run(open_at(home, float(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None))
    elif mode == "hold":
        args = sys.argv[3:6]
        asyncio.run(hold(home, args[0], float(args[1]), float(args[2])))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
