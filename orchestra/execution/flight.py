"""A request on its way through the runtime: what has been decided so far, and since when."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from orchestra.core.catalog import Catalog
from orchestra.core.decision import Decision
from orchestra.core.model_spec import ModelSpec
from orchestra.core.request import Request
from orchestra.core.result import Attempt
from orchestra.core.verdict import Verdict
from orchestra.spend.ledger import Charge


@dataclass
class Flight:
    """One request from arrival to record: the runtime fills in the verdicts, the decision and
    the catalog it was taken against (a catalog changed meanwhile does not touch a request in
    flight), the executor its attempts, what they cost, the order it planned and which model is
    streaming; the store keeps it all, whether the request was answered, failed, or abandoned."""

    request: Request
    stream: bool = False
    started: float = field(default_factory=time.perf_counter)
    created: float = field(default_factory=time.time)
    verdicts: tuple[Verdict, ...] = ()
    decision: Decision | None = None
    attempts: list[Attempt] = field(default_factory=list)
    charges: list[Charge] = field(default_factory=list)
    order: tuple[str, ...] = ()
    catalog: Catalog | None = None
    streaming: ModelSpec | None = None  # the model whose text is reaching the caller

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000
