"""The configuration file: one TOML document, validated by pydantic.

Each section's model lives with the part it configures (`[retry]` is `RetryPolicy` in
`orchestra.execution.retry`, `[breaker]` is `BreakerSettings`...); this module assembles them and
loads the file. No part reads this module: the runtime hands each part its own section.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from orchestra.agents.registry import AgentsConfig
from orchestra.core.errors import ConfigError
from orchestra.core.model_spec import ModelSpec
from orchestra.core.paths import CONFIG_ENV
from orchestra.execution.balancing import BalancingConfig
from orchestra.execution.breaker.breaker import BreakerSettings
from orchestra.execution.cache import CacheConfig
from orchestra.execution.embedded import EmbeddedConfig
from orchestra.execution.health import HealthConfig
from orchestra.execution.retry import RetryPolicy
from orchestra.policies.registry import PolicyConfig
from orchestra.spend.budget import Budget


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StoreConfig(_Section):
    """`[store]`: where the database lives and what it keeps.

    `path` is a SQLite file; `url` (`postgresql://...`, or `$ORCHESTRA_STORE_URL`, which wins)
    a PostgreSQL database shared by many machines, with its pool, timeouts and the cap of the
    spill file that keeps records while it is unreachable.

    `sync`: "full" (default) syncs each commit to the disk before the answers it holds are
    returned (one sync per group of requests committed together), so records and spend survive
    a power cut; "normal" leaves a commit to the operating system, which survives a crash or
    `kill -9` but may lose the last second of records to a power cut, and saves a disk sync
    (~0.15 ms here) on a request made alone. PostgreSQL follows its own `synchronous_commit`;
    its spill file follows `sync`.
    """

    path: Path | None = None
    url: str | None = Field(default=None, pattern=r"^postgres(ql)?://")
    keep_prompts: bool = False
    sample_every_s: float = Field(default=60.0, ge=0)
    pool_size: int = Field(default=5, ge=3)  # two for the writer and the reserver, one for reads
    connect_timeout_s: float = Field(default=5.0, gt=0)
    statement_timeout_s: float = Field(default=10.0, gt=0)
    spill_max_mb: float = Field(default=256.0, gt=0)
    sync: Literal["full", "normal"] = "full"


class DiscoveryConfig(_Section):
    """`[discovery]`: models found rather than configured (None: on when no [[models]])."""

    ollama: bool | None = None
    ollama_url: str = "http://127.0.0.1:11434"
    env_providers: bool | None = None


class ServerConfig(_Section):
    """`[server]`: `orchestra serve`'s address and limits. Its bearer token never lives in the
    file: `--token` or `$ORCHESTRA_TOKEN`."""

    host: str = "127.0.0.1"
    port: int = Field(default=8787, ge=1, le=65535)
    max_body_bytes: int = Field(default=1_048_576, gt=0)  # a larger request body is refused (413)
    max_tokens: int = Field(default=32_768, gt=0)  # the most a request may ask for (400 above)
    # How often each worker reads the models that other workers added, changed or removed.
    models_sync_s: float = Field(default=1.0, gt=0)
    # Web pages from these origins may call the API from a browser (CORS; "*" for any). None by
    # default: a browser refuses cross-origin calls, and apps outside a browser never need it.
    cors_origins: list[str] = Field(default_factory=list)


class Config(_Section):
    """The whole configuration; every section has defaults, so an empty file is valid."""

    models: tuple[ModelSpec, ...] = ()
    budget: Budget = Budget()
    policy: PolicyConfig = PolicyConfig()
    embedded: EmbeddedConfig = EmbeddedConfig()
    store: StoreConfig = StoreConfig()
    discovery: DiscoveryConfig = DiscoveryConfig()
    agents: AgentsConfig = AgentsConfig()
    retry: RetryPolicy = RetryPolicy()
    breaker: BreakerSettings = BreakerSettings()
    balancing: BalancingConfig = BalancingConfig()
    cache: CacheConfig = CacheConfig()
    health: HealthConfig = HealthConfig()
    server: ServerConfig = ServerConfig()
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
        server = data.get("server") if isinstance(data, dict) else None
        if isinstance(server, dict) and "token" in server:
            raise ValueError(
                "server has token: tokens never live in the file; use --token or ORCHESTRA_TOKEN"
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
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{resolved}: not UTF-8 text ({_bad_byte(exc)}); save it as UTF-8"
        ) from None
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


def _bad_byte(exc: UnicodeDecodeError) -> str:
    """Where text stops being UTF-8: 'byte 0xe9 at offset 32'."""
    return f"byte {exc.object[exc.start]:#04x} at offset {exc.start}"


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
