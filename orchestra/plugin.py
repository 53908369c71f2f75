"""What authors of agents, policies and backends build on: the plugin API.

    from orchestra.plugin import Agent, Verdict, Tier

    class Battery(Agent):
        name = "battery"
        async def check(self, request): ...

The built-in agents and policies import from here too: they are plugins like any other. Agents
and policies are found by name through the `orchestra.agents` and `orchestra.policies`
entry-point groups, or hooked in code (`Orchestra.hook_agent`, `register_policy`).
"""

from orchestra.agents.base import Agent
from orchestra.agents.context import AgentContext
from orchestra.agents.function import FunctionAgent, agent
from orchestra.core.catalog import Catalog
from orchestra.core.decision import Candidate, Decision, Exclusion
from orchestra.core.errors import ConfigError, NoAllowedModelError, PolicyError, ProviderError
from orchestra.core.model_spec import ModelSpec
from orchestra.core.request import Message, Request
from orchestra.core.result import Usage
from orchestra.core.tier import ALL_TIERS, TIERS, Tier
from orchestra.core.verdict import STATE_ERROR, STATE_PENDING, STATE_TIMEOUT, Verdict
from orchestra.execution.backend import Backend, CallParams, Completion, Endpoint, StreamPiece
from orchestra.policies.base import FunctionPolicy, Policy
from orchestra.policies.registry import register_policy
from orchestra.spend.budget import Budget
from orchestra.spend.tracker import SpendTracker

__all__ = [
    "ALL_TIERS",
    "STATE_ERROR",
    "STATE_PENDING",
    "STATE_TIMEOUT",
    "TIERS",
    "Agent",
    "AgentContext",
    "Backend",
    "Budget",
    "CallParams",
    "Candidate",
    "Catalog",
    "Completion",
    "ConfigError",
    "Decision",
    "Endpoint",
    "Exclusion",
    "FunctionAgent",
    "FunctionPolicy",
    "Message",
    "ModelSpec",
    "NoAllowedModelError",
    "Policy",
    "PolicyError",
    "ProviderError",
    "Request",
    "SpendTracker",
    "StreamPiece",
    "Tier",
    "Usage",
    "Verdict",
    "agent",
    "register_policy",
]
