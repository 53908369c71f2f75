"""The request-path cost of the agents: all together, and each alone, side by side in one run.

    python bench/agents_cost.py [--rounds 5000]

Ambient agents (resource, connectivity) are read from memory on the request path, so their cost
there is a dictionary lookup; per-request agents (cost, complexity, privacy, ...) run in full.
The yardstick is an empty `await` of a coroutine, the least any agent can cost.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from orchestra import Agent, AgentContext, Budget, Catalog, ModelSpec, Request, Tier
from orchestra.agents.panel import AgentPanel
from orchestra.agents.registry import build_agents
from orchestra.config import Config
from orchestra.spend.tracker import SpendTracker

PROMPTS = (
    "What is the capital of France?",
    "Write a Python function that merges two sorted lists, then prove it runs in linear time.",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in "
    "May. How many clips did Natalia sell altogether in April and May?",
)


def context() -> AgentContext:
    catalog = Catalog(
        [
            ModelSpec(name="tiny", tier=Tier.LOCAL, litellm_model="openai/tiny", size_mb=98.0,
                      input_cost_per_mtok=0.0, output_cost_per_mtok=0.0),
            ModelSpec(name="cloud", tier=Tier.CLOUD, litellm_model="openai/gpt-4o-mini",
                      api_base="http://127.0.0.1:9/v1", input_cost_per_mtok=0.15,
                      output_cost_per_mtok=0.6),
        ]
    )  # fmt: skip
    return AgentContext(
        catalog=catalog, budget=Budget(daily_usd=5.0), spend=SpendTracker.seeded(1.0, 2.0)
    )


async def timed(panel: AgentPanel, requests: list[Request], rounds: int) -> list[float]:
    out = []
    for i in range(rounds):
        t = time.perf_counter()
        await panel.verdicts(requests[i % len(requests)])
        out.append((time.perf_counter() - t) * 1e6)
    return out


async def bench(rounds: int) -> None:
    requests = [Request.of(p) for p in PROMPTS]
    agents: list[Agent] = build_agents(Config().agents)
    rows: list[tuple[str, list[float]]] = []

    async def nothing() -> None:
        return None

    t_empty = []
    for _ in range(rounds):
        t = time.perf_counter()
        await nothing()
        t_empty.append((time.perf_counter() - t) * 1e6)
    rows.append(("(empty await)", t_empty))

    for agent in agents:
        panel = AgentPanel([agent])
        await panel.start(context())
        await timed(panel, requests, 200)  # warm caches, compile regexes
        rows.append(
            (
                agent.agent_name + (" (ambient)" if agent.interval else ""),
                await timed(panel, requests, rounds),
            )
        )
        await panel.stop()

    panel = AgentPanel(build_agents(Config().agents))
    await panel.start(context())
    await timed(panel, requests, 200)
    rows.append(("all together", await timed(panel, requests, rounds)))
    await panel.stop()

    base = statistics.median(t_empty)
    print(f"request-path cost of the agents, {rounds} rounds over {len(PROMPTS)} prompts")
    print(f"{'':28}{'p50 us':>10}{'p99 us':>10}{'x empty':>10}")
    for name, xs in rows:
        xs = sorted(xs)
        p50, p99 = xs[len(xs) // 2], xs[int(len(xs) * 0.99)]
        print(f"{name:28}{p50:10.2f}{p99:10.2f}{p50 / base:10.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5000)
    asyncio.run(bench(parser.parse_args().rounds))


if __name__ == "__main__":
    main()
