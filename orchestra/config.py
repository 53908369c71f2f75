"""The configuration file: one TOML document, validated by pydantic."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from orchestra.budget import Budget
from orchestra.errors import ConfigError
from orchestra.model_spec import ModelSpec
from orchestra.paths import CONFIG_ENV

DEFAULT_AGENTS = ("resource", "connectivity", "cost", "complexity")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PolicyConfig(_Section):
    """`[policy]`: which policy decides, and its parameters: `weights` per agent and any other key
    the policy takes (thresholds, tier order, a matrix policy's `[[policy.rules]]`)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    name: str = "default"
    weights: dict[str, Annotated[float, Field(ge=0.0)]] = Field(default_factory=dict)


class EmbeddedConfig(_Section):
    """`[embedded]`: the built-in local model (SmolLM2-135M-Instruct through llama.cpp)."""

    enabled: bool = True
    name: str = "smollm2-135m"
    n_ctx: int = Field(default=2048, ge=256)
    threads: int | None = Field(default=None, ge=1)
    max_tokens: int = Field(default=256, gt=0)
    # Measured on 8 factual questions: greedy decoding with no system prompt and llama.cpp's plain
    # chatml template answers 7/8 (Paris among them); "Answer briefly and accurately." as system
    # prompt 5/8, sampling at 0.8 about 1 in 3 for Paris. The jinja template adds SmolLM's own
    # default system prompt, which hurts too.
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    seed: int = 42
    system_prompt: str | None = None
    timeout_s: float = Field(default=120.0, gt=0)


class RetryConfig(_Section):
    """`[retry]`: retries of the same model for retryable failures, within the request deadline."""

    attempts_per_model: int = Field(default=2, ge=1)
    base_s: float = Field(default=0.25, ge=0.0)
    cap_s: float = Field(default=8.0, ge=0.0)
    jitter: float = Field(default=1.0, ge=0.0, le=1.0)


class BreakerConfig(_Section):
    """`[breaker]`: the circuit breaker of every model."""

    failure_threshold: int = Field(default=3, ge=1)
    recovery_s: float = Field(default=60.0, gt=0.0)
    window: int = Field(default=20, ge=1)
    min_calls: int = Field(default=10, ge=1)
    failure_rate: float = Field(default=0.5, gt=0.0, le=1.0)


BalancingStrategy = Literal["priority", "round_robin", "least_latency", "cheapest"]


class BalancingConfig(_Section):
    """`[balancing]`: how models of one tier are ordered."""

    local: BalancingStrategy = "priority"
    edge: BalancingStrategy = "priority"
    cloud: BalancingStrategy = "priority"


class CacheConfig(_Section):
    """`[cache]`: the optional exact-match response cache (SQLite, with a TTL)."""

    enabled: bool = False
    ttl_s: float = Field(default=3600.0, gt=0.0)


class HealthConfig(_Section):
    """`[health]`: periodic cheap checks of local and edge endpoints."""

    enabled: bool = True
    interval_s: float = Field(default=30.0, gt=0.0)
    timeout_s: float = Field(default=2.0, gt=0.0)


class StoreConfig(_Section):
    """`[store]`: where the database lives and what it keeps."""

    path: Path | None = None
    keep_prompts: bool = False
    flush_interval_s: float = Field(default=0.25, gt=0)
    sample_every_s: float = Field(default=60.0, ge=0)


class DiscoveryConfig(_Section):
    """`[discovery]`: models found rather than configured (None: on when no [[models]])."""

    ollama: bool | None = None
    ollama_url: str = "http://127.0.0.1:11434"
    env_providers: bool | None = None


class AgentsConfig(_Section):
    """`[agents]`: which built-in agents run, and each agent's own settings table."""

    model_config = ConfigDict(frozen=True, extra="allow")

    enabled: tuple[str, ...] = DEFAULT_AGENTS

    @model_validator(mode="after")
    def _only_agent_tables(self) -> AgentsConfig:
        for key, value in (self.model_extra or {}).items():
            if not isinstance(value, dict) and key in self.enabled:
                raise ValueError(f"[agents.{key}] must be a table, got {type(value).__name__}")
            if not isinstance(value, dict):
                raise ValueError(
                    f"unknown key {key!r} in [agents]: it takes `enabled` and [agents.NAME] tables"
                )
            if key not in self.enabled:
                raise ValueError(f"[agents.{key}] configures an agent that is not enabled")
        return self

    def settings(self, name: str) -> dict[str, Any]:
        extra = self.model_extra or {}
        value = extra.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(f"[agents.{name}] must be a table, got {type(value).__name__}")
        return dict(value)


class Config(_Section):
    """The whole configuration; every section has defaults, so an empty file is valid."""

    models: tuple[ModelSpec, ...] = ()
    budget: Budget = Budget()
    policy: PolicyConfig = PolicyConfig()
    embedded: EmbeddedConfig = EmbeddedConfig()
    store: StoreConfig = StoreConfig()
    discovery: DiscoveryConfig = DiscoveryConfig()
    agents: AgentsConfig = AgentsConfig()
    retry: RetryConfig = RetryConfig()
    breaker: BreakerConfig = BreakerConfig()
    balancing: BalancingConfig = BalancingConfig()
    cache: CacheConfig = CacheConfig()
    health: HealthConfig = HealthConfig()
    # The whole request, every attempt and wait included.
    request_timeout_s: float = Field(default=120.0, gt=0)
    source: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _no_keys_in_file(cls, data: Any) -> Any:
        for i, model in enumerate(data.get("models", ()) if isinstance(data, dict) else ()):
            if isinstance(model, dict) and "api_key" in model:
                raise ValueError(
                    f"models[{i}] has api_key: keys never live in the file; "
                    "put the key in an environment variable and name it with api_key_env"
                )
        return data

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        seen: set[str] = set()
        for spec in self.models:
            if spec.name in seen:
                raise ValueError(f"model name {spec.name!r} is used twice")
            seen.add(spec.name)
        if self.embedded.enabled and self.embedded.name in seen:
            raise ValueError(f"model name {self.embedded.name!r} is taken by the embedded model")
        return self

    @property
    def discover_ollama(self) -> bool:
        flag = self.discovery.ollama
        return not self.models if flag is None else flag

    @property
    def discover_env_providers(self) -> bool:
        flag = self.discovery.env_providers
        return not self.models if flag is None else flag


def resolve_config_path(path: str | Path | None) -> Path | None:
    """The file to load: the explicit path, else $ORCHESTRA_CONFIG, else ./orchestra.toml."""
    if path is not None:
        return Path(path)
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    local = Path("orchestra.toml")
    return local if local.is_file() else None


def load_config(path: str | Path | None = None) -> Config:
    """Load and validate the config; with no file anywhere, every default applies."""
    resolved = resolve_config_path(path)
    if resolved is None:
        return Config()
    try:
        data = tomllib.loads(resolved.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {resolved}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{resolved}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{resolved}: cannot read: {exc}") from None
    return parse_config(data, source=resolved)


def parse_config(data: dict[str, Any], source: Path | None = None) -> Config:
    """Validate a parsed TOML document; errors name the file and each bad field."""
    try:
        return Config.model_validate({**data, "source": source})
    except ValidationError as exc:
        where = str(source) if source else "config"
        lines = [f"{where}: invalid configuration"]
        for err in exc.errors():
            loc = _location(err["loc"])
            lines.append(f"  {loc}: {err['msg']}" if loc else f"  {err['msg']}")
        raise ConfigError("\n".join(lines)) from None


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
