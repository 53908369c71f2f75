"""The complexity agent: will a small local model get this prompt right?"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestra.agents.base import Agent
from orchestra.agents.complexity.feedback import user_model_path
from orchestra.agents.complexity.scorer import DEFAULT_MODEL, Scorer, load_scorer, score, signals
from orchestra.agents.context import AgentContext
from orchestra.core.request import Request
from orchestra.core.tier import Tier
from orchestra.core.verdict import Verdict

__all__ = ["ComplexityAgent", "score", "signals"]

log = logging.getLogger("orchestra.agents.complexity")


class ComplexityAgent(Agent):
    """Scores the prompt in [0, 1] (higher: a weak model is more likely to fail) and maps the score
    to a tier: below `edge_from` LOCAL, from `cloud_from` CLOUD, EDGE between.

    The scorer is learned offline (see `agents/complexity_scorer.py`). `model` picks its weights:
    by default the model `orchestra train-complexity` wrote from your feedback, when there is one,
    else the shipped model; "shipped" forces the shipped one; anything else is a model file. Pass
    `scorer` to use your own callable instead. Confidence grows with the distance from the
    nearest threshold.
    """

    name = "complexity"

    def __init__(
        self,
        # The default score reads as P(a local-class model fails): local while it is under even
        # odds, cloud once failure is clearly likely.
        edge_from: float = 0.5,
        cloud_from: float = 0.65,
        scorer: Callable[[str], float] | None = None,
        model: str | Path | None = None,
    ) -> None:
        if not 0.0 <= edge_from <= cloud_from <= 1.0:
            raise ValueError("need 0 <= edge_from <= cloud_from <= 1")
        if scorer is not None and model is not None:
            raise ValueError("give either `scorer` (a callable) or `model` (a file), not both")
        self.edge_from, self.cloud_from = edge_from, cloud_from
        self._scorer = scorer
        self._implicit = model is None
        self.model_path = _model_path(model)
        self._model: Scorer | None = None
        mine = scorer is None and self.model_path != DEFAULT_MODEL
        self._by = f" (model {self.model_path.name})" if mine else ""

    @property
    def model(self) -> Scorer:
        """The learned model in use (loaded on first use, or at start)."""
        if self._model is None:
            try:
                self._model = load_scorer(self.model_path)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                problem = f"complexity model {self.model_path} is unusable: {exc}"
                if not self._implicit:
                    raise ValueError(problem) from exc
                # Found in the data dir, not asked for: a broken file must not stop the runtime.
                log.warning("%s; using the shipped model", problem)
                self.model_path, self._by = DEFAULT_MODEL, ""
                self._model = load_scorer(DEFAULT_MODEL)
        return self._model

    async def start(self, context: AgentContext) -> None:
        if self._scorer is None:  # read the file off the event loop, before the first request
            await asyncio.to_thread(lambda: self.model)

    async def check(self, request: Request | None) -> Verdict:
        prompt = request.prompt if request is not None else ""
        if self._scorer is not None:
            return self.judge(float(self._scorer(prompt)))
        sig = signals(prompt)  # extracted once: scored, then reported
        return self.judge(self.model.score_signals(sig), sig)

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
            reason=f"complexity score {value:.2f}{self._by}",
            metrics=metrics,
        )


def _model_path(model: str | Path | None) -> Path:
    if model is None:
        mine = user_model_path()
        return mine if mine.is_file() else DEFAULT_MODEL
    if str(model) == "shipped":
        return DEFAULT_MODEL
    path = Path(model).expanduser()
    if not path.is_file():
        raise ValueError(f"complexity model file {str(path)!r} does not exist")
    return path
