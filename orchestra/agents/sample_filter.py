"""Decides which ambient samples are worth a row in the store."""

from __future__ import annotations

from orchestra.core.verdict import Verdict


class SampleFilter:
    """Keeps a sample when its agent's state, target or allowed tiers changed, or when
    `every_s` seconds have passed since that agent's last kept sample (0: keep all)."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._last: dict[str, tuple[tuple[object, ...], float]] = {}

    def keep(self, verdict: Verdict) -> bool:
        key = (verdict.state, verdict.target, verdict.allowed, verdict.neutral)
        last = self._last.get(verdict.agent)
        if last is not None and last[0] == key and verdict.at - last[1] < self.every_s:
            return False
        self._last[verdict.agent] = (key, verdict.at)
        return True
