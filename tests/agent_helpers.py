"""Agents the tests share."""

from __future__ import annotations

from orchestra import Agent, Request, Tier, Verdict


class WantsCloud(Agent):
    """Votes for the cloud as hard as it can (a hard prompt): the paid model is tried first."""

    name = "wants-cloud"

    async def check(self, request: Request | None) -> Verdict:
        return self.verdict(target=Tier.CLOUD, confidence=1.0, reason="hard prompt")
