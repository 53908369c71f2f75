"""What the runtime offers an agent when it starts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from orchestra.core.catalog import Catalog
from orchestra.spend.budget import Budget
from orchestra.spend.tracker import SpendTracker


@dataclass(frozen=True, kw_only=True)
class AgentContext:
    """The runtime's read-only view for agents: the catalog, the budget, live spend, settings.

    `settings` holds the agent's own table from the config (`[agents.<name>]`);
    `answered_at(model)` says when a real call to that model last answered (`time.monotonic()`,
    None if none has).
    """

    catalog: Catalog
    budget: Budget
    spend: SpendTracker
    settings: dict[str, Any] = field(default_factory=dict)
    answered_at: Callable[[str], float | None] = field(default=lambda model: None)
