"""A request on its way through the runtime: what has been decided so far, and since when."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from orchestra.core.decision import Decision
from orchestra.core.request import Request
from orchestra.core.verdict import Verdict


@dataclass
class Flight:
    """One request from arrival to record: the runtime fills in the verdicts and the decision,
    the executor answers it, and the store keeps it."""

    request: Request
    stream: bool = False
    started: float = field(default_factory=time.perf_counter)
    created: float = field(default_factory=time.time)
    verdicts: tuple[Verdict, ...] = ()
    decision: Decision | None = None

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000
