"""The complexity agent: will a small local model get this prompt right?"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agents.complexity_scorer import load_scorer, score, signals
from orchestra import Agent, Request, Tier, Verdict

__all__ = ["ComplexityAgent", "score", "signals"]


class ComplexityAgent(Agent):
    """Scores the prompt in [0, 1] (higher: a weak model is more likely to fail) and maps the score
    to a tier: below `edge_from` LOCAL, from `cloud_from` CLOUD, EDGE between.

    The default scorer is learned offline (see `agents/complexity_scorer.py`); pass `scorer` to use
    your own callable. Confidence grows with the distance from the nearest threshold.
    """

    name = "complexity"

    def __init__(
        self,
        # The default score reads as P(a local-class model fails): local while it is under even
        # odds, cloud once failure is clearly likely.
        edge_from: float = 0.5,
        cloud_from: float = 0.65,
        scorer: Callable[[str], float] | None = None,
    ) -> None:
        if not 0.0 <= edge_from <= cloud_from <= 1.0:
            raise ValueError("need 0 <= edge_from <= cloud_from <= 1")
        self.edge_from, self.cloud_from = edge_from, cloud_from
        self._scorer = scorer

    async def check(self, request: Request | None) -> Verdict:
        prompt = request.prompt if request is not None else ""
        if self._scorer is not None:
            return self.judge(float(self._scorer(prompt)))
        sig = signals(prompt)  # extracted once: scored, then reported
        return self.judge(load_scorer().score_signals(sig), sig)

    def judge(self, value: float, signals: dict[str, float] | None = None) -> Verdict:
        """The verdict for one score and, if known, the signals behind it (pure)."""
        value = min(1.0, max(0.0, value))
        if value < self.edge_from:
            target, state = Tier.LOCAL, "simple"
        elif value < self.cloud_from:
            target, state = Tier.EDGE, "moderate"
        else:
            target, state = Tier.CLOUD, "complex"
        margin = min(abs(value - self.edge_from), abs(value - self.cloud_from))
        metrics: dict[str, Any] = {"score": round(value, 4)}
        if signals:
            metrics["signals"] = {k: round(v, 3) for k, v in signals.items() if v}
        return self.verdict(
            target=target,
            confidence=round(min(0.9, 0.3 + 1.5 * margin), 3),
            state=state,
            reason=f"complexity score {value:.2f}",
            metrics=metrics,
        )
