"""The one place where the core names the built-in agents and policies."""

from __future__ import annotations

import importlib
import inspect
from types import ModuleType
from typing import Any

from orchestra.agent import Agent
from orchestra.config import Config, PolicyConfig
from orchestra.errors import ConfigError, PolicyError
from orchestra.policy import FunctionPolicy, Policy


def builtin_agent_types() -> dict[str, type[Agent]]:
    from agents import BUILTIN_AGENTS

    return dict(BUILTIN_AGENTS)


def simulated_agents(scenario: Any, catalog: Any) -> Any:
    """The built-in agents judging a scripted scenario (for `orchestra experiment`)."""
    from agents.simulated import SimulatedAgents

    return SimulatedAgents(scenario, catalog)


def complexity_training() -> ModuleType:
    """The built-in complexity agent's training module (for `orchestra train-complexity`)."""
    return importlib.import_module("agents.complexity_feedback")


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


POLICY_ENTRY_POINTS = "orchestra.policies"
_REGISTERED: dict[str, Any] = {}


def register_policy(name: str, factory: Any) -> None:
    """Make a policy class, factory, instance or plain function available as `[policy] name`."""
    _REGISTERED[name] = factory


def resolve_policy(spec: PolicyConfig) -> Policy:
    """The policy `[policy] name` names, built with the table's other keys as parameters.

    Looked up in order: policies registered with `register_policy`, the built-ins, the
    `orchestra.policies` entry-point group of installed packages, then 'package.module:attribute'.
    """
    from policies import BUILTIN_POLICIES

    params: dict[str, Any] = dict(spec.model_extra or {})
    if spec.weights:
        params["weights"] = spec.weights
    factory = _REGISTERED.get(spec.name) or BUILTIN_POLICIES.get(spec.name)
    if factory is None:
        factory = _entry_point_policy(spec.name)
    if factory is None and ":" in spec.name:
        factory = _import(spec.name)
    if factory is None:
        known = ", ".join([*BUILTIN_POLICIES, *_REGISTERED])
        raise PolicyError(
            f"unknown policy {spec.name!r}; known: {known}; or name your own as 'module:Class'"
        )
    return _build_policy(spec.name, factory, params)


def _build_policy(name: str, factory: Any, params: dict[str, Any]) -> Policy:
    # A class is checked first: the Policy protocol only looks for attributes, which a policy
    # class has as much as its instances.
    if inspect.isclass(factory):
        try:
            policy: Any = factory(**params)
        except (TypeError, ValueError) as exc:
            raise PolicyError(f"cannot build policy {name!r} from [policy]: {exc}") from exc
    elif isinstance(factory, Policy):
        policy = factory
    elif callable(factory) and _takes_three(factory):  # (request, verdicts, catalog) -> Decision
        policy = FunctionPolicy(factory, name=name)
    else:
        policy = factory
    if not isinstance(policy, Policy):
        raise PolicyError(f"{name!r} is not a policy: it needs a `name` and a `decide` method")
    return policy


def _takes_three(fn: Any) -> bool:
    try:
        inspect.signature(fn).bind(None, None, None)
    except (TypeError, ValueError):
        return False
    return True


def _entry_point_policy(name: str) -> Any:
    from importlib.metadata import entry_points

    for ep in entry_points(group=POLICY_ENTRY_POINTS):
        if ep.name == name:
            try:
                return ep.load()
            except Exception as exc:
                raise PolicyError(f"policy {name!r} ({ep.value}) failed to load: {exc}") from exc
    return None


def _import(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except Exception as exc:  # a bad path, or a module that raises on import
        raise PolicyError(f"cannot load policy {target!r}: {exc}") from exc
