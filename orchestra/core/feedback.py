"""What the user says of an answer: good or bad, kept beside the request it judges.

Feedback is append only: giving it again adds a row and the newest row counts. It is what
`orchestra train-complexity` learns from (a local answer marked bad: the prompt needed a
stronger tier).
"""

from __future__ import annotations

from typing import NamedTuple

from pydantic import BaseModel, ConfigDict

MIN_PREFIX = 6  # `orchestra history` shows 12 characters; fewer than 6 would collide too often
MAX_NOTE_CHARS = 2_000


class Feedback(BaseModel):
    """One judgement of one answer, as recorded."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str
    good: bool
    at: float
    note: str | None = None
    model: str | None = None
    tier: str | None = None


class RequestRef(NamedTuple):
    """A recorded request found by id or prefix: who answered it (None when it failed)."""

    request_id: str
    model: str | None
    tier: str | None


class Judged(NamedTuple):
    """A judged request as training needs it: the newest judgement and what was kept.

    `transcript` is the JSON of the messages (only with `keep_prompts`); `complexity_metrics` the
    JSON of the complexity agent's recorded metrics, if it ran.
    """

    request_id: str
    status: str
    tier: str | None
    transcript: str | None
    good: bool
    complexity_metrics: str | None
