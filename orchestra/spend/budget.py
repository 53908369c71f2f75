"""Spending limits."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Budget(BaseModel):
    """`[budget]`: daily and monthly limits in USD (None: no limit), the alert share, the calendar
    they follow, and how long an answer may be when a paid call sets no `max_tokens`.

    A paid call with no `max_tokens` is capped at `max_tokens_per_call` answer tokens, or fewer
    when less of the budget is left, so that no single call can overrun it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    daily_usd: float | None = Field(default=None, ge=0.0)
    monthly_usd: float | None = Field(default=None, ge=0.0)
    alert_share: float = Field(default=0.8, gt=0.0, le=1.0)
    timezone: str | None = None  # an IANA name, e.g. "Europe/Paris"; None: this machine's
    max_tokens_per_call: int = Field(default=4096, gt=0)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    f"unknown time zone {value!r} (want e.g. 'Europe/Paris')"
                ) from None
        return value

    @property
    def limited(self) -> bool:
        return self.daily_usd is not None or self.monthly_usd is not None
