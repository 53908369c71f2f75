"""Policies by name: registered ones, the built-ins, entry points, or 'package.module:attribute'.

With `orchestra.agents.registry`, the only place that names the built-ins.
"""

from __future__ import annotations

import inspect
from importlib import import_module
from importlib.metadata import entry_points
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from orchestra.core.errors import PolicyError
from orchestra.core.settings import unknown_settings
from orchestra.policies.base import FunctionPolicy, Policy

POLICY_ENTRY_POINTS = "orchestra.policies"

# name -> "module:class", imported on first use.
BUILTIN_POLICIES: dict[str, str] = {
    "default": "orchestra.policies.default:DefaultPolicy",
    "local_first": "orchestra.policies.local_first:LocalFirstPolicy",
    "cost_saver": "orchestra.policies.cost_saver:CostSaverPolicy",
    "quality_first": "orchestra.policies.quality_first:QualityFirstPolicy",
    "latency_first": "orchestra.policies.latency_first:LatencyFirstPolicy",
    "matrix": "orchestra.policies.matrix:MatrixPolicy",
}


class PolicyConfig(BaseModel):
    """`[policy]`: which policy decides, and its parameters: `weights` per agent and any other key
    the policy takes (thresholds, tier order, a matrix policy's `[[policy.rules]]`)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    name: str = "default"
    weights: dict[str, Annotated[float, Field(ge=0.0)]] = Field(default_factory=dict)

    def parameters(self) -> dict[str, Any]:
        """What the policy is built with: every key but `name` (`weights` only when given)."""
        params: dict[str, Any] = dict(self.model_extra or {})
        if self.weights:
            params["weights"] = self.weights
        return params


_REGISTERED: dict[str, Any] = {}


def register_policy(name: str, factory: Any) -> None:
    """Make a policy class, factory, instance or plain function available as `[policy] name`."""
    _REGISTERED[name] = factory


def builtin_policy_type(name: str) -> type[Any]:
    """The class of the built-in policy `name` (KeyError if there is none)."""
    return _import(BUILTIN_POLICIES[name])  # type: ignore[no-any-return]


def resolve_policy(spec: PolicyConfig | str) -> Policy:
    """The policy a `[policy]` table (or a bare name) names, built with the table's other keys.

    Looked up in order: policies registered with `register_policy`, the built-ins, the
    `orchestra.policies` entry-point group of installed packages, then 'package.module:attribute'.
    """
    if isinstance(spec, str):
        spec = PolicyConfig(name=spec)
    name, params = spec.name, spec.parameters()
    factory = _REGISTERED.get(name)
    if factory is None and name in BUILTIN_POLICIES:
        factory = builtin_policy_type(name)
    if factory is None:
        factory = _entry_point_policy(name)
    if factory is None and ":" in name:
        factory = _import(name)
    if factory is None:
        known = ", ".join([*BUILTIN_POLICIES, *_REGISTERED])
        raise PolicyError(
            f"unknown policy {name!r}; known: {known}; or name your own as 'module:Class'"
        )
    return _build(name, factory, params)


def _build(name: str, factory: Any, params: dict[str, Any]) -> Policy:
    # A class is checked first: the Policy protocol only looks for attributes, which a policy
    # class has as much as its instances. A policy whose constructor raises is a bad [policy].
    if inspect.isclass(factory):
        if (unknown := unknown_settings(factory, params)) is not None:
            raise PolicyError(f"cannot build policy {name!r} from [policy]: {unknown}")
        try:
            policy: Any = factory(**params)
        except Exception as exc:
            raise PolicyError(
                f"cannot build policy {name!r} from [policy]: {type(exc).__name__}: {exc}"
            ) from exc
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
        return getattr(import_module(module_name), attr)
    except Exception as exc:  # a bad path, or a module that raises on import
        raise PolicyError(f"cannot load policy {target!r}: {exc}") from exc
