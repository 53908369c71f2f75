"""A model in the catalog: how to call it and what it costs."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestra.core.tier import Tier


class ModelSpec(BaseModel):
    """One callable model: its name, tier, LiteLLM model string, endpoint and price.

    The API key is never held here: `api_key_env` names the environment variable that holds it,
    read at call time.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    tier: Tier
    litellm_model: str = Field(min_length=1)
    api_base: str | None = None
    api_key_env: str | None = None
    input_cost_per_mtok: float | None = Field(default=None, ge=0.0)
    output_cost_per_mtok: float | None = Field(default=None, ge=0.0)
    context_window: int = Field(default=8192, gt=0)
    # One attempt's limit (a whole answer, when not streamed); a stream must start within
    # `first_chunk_timeout_s` and never go quiet longer than `idle_timeout_s`.
    timeout_s: float = Field(default=60.0, gt=0.0)
    first_chunk_timeout_s: float = Field(default=30.0, gt=0.0)
    idle_timeout_s: float = Field(default=30.0, gt=0.0)
    system_prompt: str | None = None
    embedded: bool = False
    # Call through LiteLLM even an OpenAI-compatible server (`openai/...` with `api_base`), which
    # is otherwise called through the OpenAI SDK directly (execution/openai_compatible.py).
    via_litellm: bool = False
    # What the model can do ("vision", "tools", "json"), how good it is (0-1, for quality-first
    # policies) and how fast it usually answers; all optional, used by policies.
    capabilities: frozenset[str] = frozenset()
    quality: float | None = Field(default=None, ge=0.0, le=1.0)
    typical_latency_ms: float | None = Field(default=None, gt=0.0)
    size_mb: float | None = Field(default=None, ge=0.0)
    # Rate limits (None: unlimited); over a limit the call waits in a bounded queue ("wait") or
    # the next candidate is tried ("next").
    requests_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_minute: int | None = Field(default=None, gt=0)
    when_limited: Literal["wait", "next"] = "wait"
    limit_queue_size: int = Field(default=100, gt=0)

    @field_validator("api_base")
    @classmethod
    def _an_http_url(cls, value: str | None) -> str | None:
        """A base without a scheme ("localhost:11434") fails only at the first call, as a
        connection error that looks like the provider's; said here, it names the field."""
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"must be an http:// or https:// URL with a host, e.g. http://192.168.1.20:11434"
                f" (got {value!r})"
            )
        return value

    @property
    def is_free(self) -> bool:
        return self.input_cost_per_mtok == 0 and self.output_cost_per_mtok == 0
