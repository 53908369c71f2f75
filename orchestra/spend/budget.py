"""Spending limits."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Budget(BaseModel):
    """Daily and monthly spending limits in USD (None: no limit) and the alert share."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    daily_usd: float | None = Field(default=None, ge=0.0)
    monthly_usd: float | None = Field(default=None, ge=0.0)
    alert_share: float = Field(default=0.8, gt=0.0, le=1.0)
