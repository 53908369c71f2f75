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


def builtin_agents(config: Config) -> list[Agent]:
    """The agents `[agents] enabled` names, each built with its `[agents.<name>]` table."""
    known = builtin_agent_types()
    out: list[Agent] = []
    for name in config.agents.enabled:
        if name not in known:
            raise ConfigError(
                f"[agents] enabled names unknown agent {name!r}; built-in: {', '.join(known)}"
            )
        settings = config.agents.settings(name)
        try:
            out.append(known[name](**settings))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"[agents.{name}]: {exc}") from exc
    return out


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
