"""The one place where the core names the built-in agents and policies."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from orchestra.agent import Agent
from orchestra.config import Config, PolicyConfig
from orchestra.errors import ConfigError, PolicyError
from orchestra.policy import Policy


def builtin_agent_types() -> dict[str, type[Agent]]:
    from agents import BUILTIN_AGENTS

    return dict(BUILTIN_AGENTS)


AGENT_ENTRY_POINTS = "orchestra.agents"


def builtin_agents(config: Config) -> list[Agent]:
    """The agents `[agents] enabled` names, each built with its `[agents.<name>]` table.

    A name is a built-in agent, else an entry point in the `orchestra.agents` group (how
    third-party packages ship agents): an `Agent` subclass or a factory returning an `Agent`.
    """
    known: dict[str, Any] = dict(builtin_agent_types())
    missing = [n for n in config.agents.enabled if n not in known]
    if missing:
        known.update(_entry_point_agents(missing))
    out: list[Agent] = []
    for name in config.agents.enabled:
        if name not in known:
            raise ConfigError(
                f"[agents] enabled names unknown agent {name!r}; built-in: "
                f"{', '.join(builtin_agent_types())}; others come from the "
                f"'{AGENT_ENTRY_POINTS}' entry-point group of installed packages"
            )
        settings = config.agents.settings(name)
        factory = known[name]
        if isinstance(factory, Agent):  # e.g. an `@agent` function: already an instance
            if settings:
                raise ConfigError(f"[agents.{name}]: this agent takes no settings")
            out.append(factory)
            continue
        try:
            made = factory(**settings)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"[agents.{name}]: {exc}") from exc
        if not isinstance(made, Agent):
            raise ConfigError(f"agent {name!r} is {type(made).__name__}, not an orchestra.Agent")
        out.append(made)
    return out


def _entry_point_agents(names: list[str]) -> dict[str, Any]:
    from importlib.metadata import entry_points

    found: dict[str, Any] = {}
    for ep in entry_points(group=AGENT_ENTRY_POINTS):
        if ep.name in names:
            try:
                found[ep.name] = ep.load()
            except Exception as exc:  # a broken plugin is a config problem, said clearly
                raise ConfigError(f"agent {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
    return found


def resolve_policy(spec: PolicyConfig) -> Policy:
    """A built-in policy by name, or a user's policy as 'package.module:attribute'."""
    from policies import BUILTIN_POLICIES

    params: dict[str, Any] = {"weights": spec.weights} if spec.weights else {}
    factory: Any
    if spec.name in BUILTIN_POLICIES:
        factory = BUILTIN_POLICIES[spec.name]
    elif ":" in spec.name:
        factory = _import(spec.name)
    else:
        known = ", ".join(BUILTIN_POLICIES)
        raise PolicyError(
            f"unknown policy {spec.name!r}; built-in: {known}; or name your own as 'module:Class'"
        )
    try:
        policy = factory(**params) if inspect.isclass(factory) else factory
    except TypeError as exc:
        raise PolicyError(f"cannot build policy {spec.name!r} from [policy]: {exc}") from exc
    if not isinstance(policy, Policy):
        raise PolicyError(f"{spec.name!r} is not a policy: it needs a `name` and a `decide` method")
    return policy


def _import(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except Exception as exc:  # a bad path, or a module that raises on import
        raise PolicyError(f"cannot load policy {target!r}: {exc}") from exc
