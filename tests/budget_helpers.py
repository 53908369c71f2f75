"""What the money tests share: an agent that sends requests to the paid model first, and a
budgeted runtime with one paid and one free model, on SQLite or PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from orchestra import Agent, Request, Tier, Verdict
from orchestra.config import Config, parse_config


class WantsCloud(Agent):
    """Votes for the cloud as hard as it can (a hard prompt): the paid model is tried first."""

    name = "wants-cloud"

    async def check(self, request: Request | None) -> Verdict:
        return self.verdict(target=Tier.CLOUD, confidence=1.0, reason="hard prompt")


def paid_and_free(location: str | Path, daily_usd: float = 1.0) -> Config:
    """ "paid" (cloud, $1 / $2 a million tokens) and "free" (local), a daily budget, the store at
    `location` (a PostgreSQL URL or a SQLite file)."""
    where = {"url": location} if isinstance(location, str) else {"path": str(location)}
    return parse_config(
        {
            "embedded": {"enabled": False},
            "health": {"enabled": False},
            "store": where,
            "budget": {"daily_usd": daily_usd},
            "models": [
                {"name": "paid", "tier": "cloud", "litellm_model": "openai/paid",
                 "input_cost_per_mtok": 1.0, "output_cost_per_mtok": 2.0},
                {"name": "free", "tier": "local", "litellm_model": "openai/free",
                 "input_cost_per_mtok": 0.0, "output_cost_per_mtok": 0.0},
            ],
        }
    )  # fmt: skip
