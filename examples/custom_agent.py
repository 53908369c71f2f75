"""A custom agent: keep requests on this device outside working hours.

    python examples/custom_agent.py "What is the capital of France?"
    python examples/custom_agent.py --hour 22 "Summarise this contract"   # pretend it is 22:00

An agent is a class with a `name` and an async `check()` returning a `Verdict`. This one runs per
request (no `interval`), so it must be fast: it only reads the clock.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import datetime

from orchestra import Agent, Orchestra, Request, Tier, Verdict


class WorkingHoursAgent(Agent):
    """Outside working hours only the local tier is allowed (nobody is there to pay the bill)."""

    name = "working-hours"

    def __init__(self, start: int = 9, end: int = 18, hour: int | None = None) -> None:
        self.start, self.end, self.hour = start, end, hour

    async def check(self, request: Request | None) -> Verdict:
        hour = datetime.now().hour if self.hour is None else self.hour
        metrics = {"hour": hour, "window": f"{self.start}-{self.end}"}
        if self.start <= hour < self.end:
            return self.verdict(
                state="open", confidence=0.0, reason="working hours", metrics=metrics
            )
        return self.verdict(
            target=Tier.LOCAL,
            allowed=frozenset({Tier.LOCAL}),
            confidence=1.0,
            state="closed",
            reason=f"{hour}:00 is outside {self.start}:00-{self.end}:00",
            metrics=metrics,
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt")
    parser.add_argument("--hour", type=int, help="pretend it is this hour (0-23)")
    parser.add_argument("--config", help="Orchestra config file")
    args = parser.parse_args()

    async with Orchestra(config=args.config) as orc:
        orc.hook_agent(WorkingHoursAgent(hour=args.hour))
        result = await orc.complete(args.prompt)
    print(result.text.strip())
    verdict = next(v for v in result.verdicts if v.agent == "working-hours")
    print(f"-- {result.model} ({result.tier}); working-hours: {verdict.state} ({verdict.reason})")


if __name__ == "__main__":
    asyncio.run(main())
