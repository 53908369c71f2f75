"""Replay speed over a large, realistic history.

    python bench/replay.py [--requests 100000]

Writes N requests through the store's own record path, as a runtime with the default agents
leaves them (resource and connectivity samples that change every few seconds, a cost verdict, a
complexity verdict with its signals for each prompt, a privacy verdict, the default policy's
decision, an attempt and a charge), then times `replay()` with one policy and with two, in
one process and split between a process per CPU (the default for a history this long), and
prints requests per second beside the goal (50,000 a second with one policy).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from orchestra import Catalog, ModelSpec, Request, Result, Tier, Verdict  # noqa: E402
from orchestra.agents.complexity.agent import ComplexityAgent  # noqa: E402
from orchestra.agents.privacy import PrivacyAgent  # noqa: E402
from orchestra.core.errors import NoAllowedModelError  # noqa: E402
from orchestra.core.result import Attempt  # noqa: E402
from orchestra.lab.replay import replay  # noqa: E402
from orchestra.policies.registry import PolicyConfig, resolve_policy  # noqa: E402
from orchestra.spend.ledger import Charge  # noqa: E402
from orchestra.store import RequestRecord, SqliteStore  # noqa: E402

GOAL = 50_000

MODELS = [
    ModelSpec(name="tiny", tier=Tier.LOCAL, litellm_model="ollama/tiny", input_cost_per_mtok=0,
              output_cost_per_mtok=0),
    ModelSpec(name="lan", tier=Tier.EDGE, litellm_model="openai/lan", input_cost_per_mtok=0.05,
              output_cost_per_mtok=0.1),
    ModelSpec(name="mini", tier=Tier.CLOUD, litellm_model="openai/mini", input_cost_per_mtok=0.15,
              output_cost_per_mtok=0.6),
    ModelSpec(name="big", tier=Tier.CLOUD, litellm_model="openai/big", input_cost_per_mtok=2.5,
              output_cost_per_mtok=10),
]  # fmt: skip
WORDS = [
    "the", "a", "of", "to", "and", "in", "is", "what", "how", "why", "explain", "prove",
    "compute", "list", "write", "code", "function",
]  # fmt: skip


def ambient(agent: str, at: float, rng: random.Random) -> Verdict:
    """A resource or connectivity sample, with metrics the size the real agents report."""
    metrics = {f"{agent}_{k}": round(rng.random() * 100, 2) for k in range(24)}
    allowed = rng.choice([frozenset(Tier), frozenset({Tier.LOCAL, Tier.EDGE})])
    return Verdict(agent=agent, target=rng.choice(list(Tier)), allowed=allowed,
                   confidence=round(rng.random(), 2), state="ok", reason=f"{agent} sample",
                   metrics=metrics, at=at)  # fmt: skip


async def fill(store: SqliteStore, n: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    complexity, privacy = ComplexityAgent(model="shipped"), PrivacyAgent()
    cost = Verdict(agent="cost", confidence=0.0, state="no_budget", reason="no budget set",
                   metrics={"today_usd": 0.0})  # fmt: skip
    policy = resolve_policy(PolicyConfig(name="default"))
    catalog = Catalog(MODELS)
    now = time.time()
    samples: dict[str, Verdict] = {}
    for i in range(n):
        at = now - (n - i) * 0.05  # 20 requests a second
        for agent, every in (("resource", 2.0), ("connectivity", 5.0)):
            if agent not in samples or at - samples[agent].at >= every:
                samples[agent] = ambient(agent, at, rng)
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 60)))
        request = Request.of(prompt, model="big" if i % 50 == 0 else None)
        verdicts = (samples["resource"], samples["connectivity"], cost,
                    await complexity.check(request), await privacy.check(request))  # fmt: skip
        try:
            decision = policy.decide(request, verdicts, catalog)
        except NoAllowedModelError:
            request = request.model_copy(update={"model": None})
            decision = policy.decide(request, verdicts, catalog)
        spec = catalog.get(decision.candidates[0].model)
        pt, ct = rng.randint(10, 2000), rng.randint(5, 500)
        price = (pt * (spec.input_cost_per_mtok or 0) + ct * (spec.output_cost_per_mtok or 0)) / 1e6
        attempts = (Attempt(model=spec.name, tier=spec.tier, ok=True, latency_ms=12.0),)
        result = Result(request_id=request.id, text="", model=spec.name, tier=spec.tier,
                        cost_usd=price, latency_ms=12.0, prompt_tokens=pt, completion_tokens=ct,
                        decision=decision, verdicts=verdicts, attempts=attempts,
                        created_at=at)  # fmt: skip
        charge = Charge(model=spec.name, tier=spec.tier, prompt_tokens=pt, completion_tokens=ct,
                        cost_usd=price, at=at)  # fmt: skip
        store.record(
            RequestRecord(request=request, verdicts=verdicts, decision=decision, result=result,
                          attempts=attempts, created_at=at, latency_ms=12.0, charges=(charge,),
                          ambient=frozenset({"resource", "connectivity"}))
        )  # fmt: skip
        if i % 2000 == 0:
            await store.flush()
    await store.flush()


async def bench(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "orchestra.db"
        async with SqliteStore(db) as store:
            t0 = time.perf_counter()
            await fill(store, n)
            took = time.perf_counter() - t0
        size = db.stat().st_size  # closed: the WAL is folded into the file
        print(f"wrote {n} requests through the store in {took:.1f} s "
              f"({size / n:.0f} bytes a request on disk)")  # fmt: skip
        catalog = Catalog(MODELS)
        default = resolve_policy(PolicyConfig(name="default"))
        muted = resolve_policy(PolicyConfig(name="default", weights={"complexity": 0.0}))
        async with SqliteStore(db) as store:
            for policies in ([default], [default, muted]):
                for workers, how in ((1, "one process"), (None, "default: a process per CPU")):
                    t0 = time.perf_counter()
                    reports = await replay(store, catalog, policies, workers=workers)
                    dt = time.perf_counter() - t0
                    agree = reports[0].decision_agreement_rate or 0.0
                    rate = n / dt
                    print(f"{len(policies)} polic{'y' if len(policies) == 1 else 'ies'}, {how}: "
                          f"{dt:.2f} s, {rate:,.0f} requests/s ({rate / GOAL:.2f}x the goal of "
                          f"{GOAL:,}/s); live decisions reproduced: {agree:.1%}")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    asyncio.run(bench(parser.parse_args().requests))
