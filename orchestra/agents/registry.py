"""Agents by name: the built-ins, and third-party agents from the `orchestra.agents` entry points.

This module and `orchestra.policies.registry` are the only places that name the built-ins; the
runtime reaches them through here, so a user's agent is exactly as first-class as a built-in one.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from orchestra.agents.base import Agent
from orchestra.core.errors import ConfigError
from orchestra.core.settings import unknown_settings

AGENT_ENTRY_POINTS = "orchestra.agents"

# name -> "module:class"; imported only when enabled (the resource agent imports psutil, the
# connectivity agent httpx).
BUILTIN_AGENTS: dict[str, str] = {
    "resource": "orchestra.agents.resource:ResourceAgent",
    "connectivity": "orchestra.agents.connectivity:ConnectivityAgent",
    "cost": "orchestra.agents.cost:CostAgent",
    "complexity": "orchestra.agents.complexity.agent:ComplexityAgent",
    "privacy": "orchestra.agents.privacy:PrivacyAgent",
}


class AgentsConfig(BaseModel):
    """`[agents]`: which built-in agents run, and each agent's own settings table."""

    model_config = ConfigDict(frozen=True, extra="allow")

    # The privacy agent is on by default for credentials only (its default `kinds`): a prompt
    # holding a key or a password stays local; personal data is opt-in.
    enabled: tuple[str, ...] = ("resource", "connectivity", "cost", "complexity", "privacy")

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


def builtin_agent_type(name: str) -> type[Agent]:
    """The class of the built-in agent `name` (KeyError if there is none)."""
    module, _, attr = BUILTIN_AGENTS[name].partition(":")
    cls: type[Agent] = getattr(import_module(module), attr)
    return cls


def build_agents(config: AgentsConfig) -> list[Agent]:
    """The agents `[agents] enabled` names, each built with its `[agents.<name>]` table.

    A name is a built-in agent, else an entry point in the `orchestra.agents` group (how
    third-party packages ship agents): an `Agent` subclass, a factory returning an `Agent`, or an
    `@agent` function.
    """
    enabled = config.enabled
    missing = [n for n in enabled if n not in BUILTIN_AGENTS]
    plugins = _entry_point_agents(missing) if missing else {}
    out: list[Agent] = []
    for name in enabled:
        if name in BUILTIN_AGENTS:
            factory: Any = builtin_agent_type(name)
        elif name in plugins:
            factory = plugins[name]
        else:
            raise ConfigError(
                f"[agents] enabled names unknown agent {name!r}; built-in: "
                f"{', '.join(BUILTIN_AGENTS)}; others come from the "
                f"'{AGENT_ENTRY_POINTS}' entry-point group of installed packages"
            )
        out.append(_build(name, factory, config.settings(name)))
    return out


def _build(name: str, factory: Any, settings: dict[str, Any]) -> Agent:
    if isinstance(factory, Agent):  # e.g. an `@agent` function: already an instance
        if settings:
            raise ConfigError(f"[agents.{name}]: this agent takes no settings")
        return factory
    if (unknown := unknown_settings(factory, settings)) is not None:
        raise ConfigError(f"[agents.{name}]: {unknown}")
    try:
        made = factory(**settings)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[agents.{name}]: {exc}") from exc
    if not isinstance(made, Agent):
        raise ConfigError(f"agent {name!r} is {type(made).__name__}, not an orchestra.Agent")
    return made


def _entry_point_agents(names: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for ep in entry_points(group=AGENT_ENTRY_POINTS):
        if ep.name in names:
            try:
                found[ep.name] = ep.load()
            except Exception as exc:  # a broken plugin is a config problem, said clearly
                raise ConfigError(f"agent {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
    return found
