"""Orchestra: routes every LLM call to the right model and tier, and makes the call.

This module's `__all__` is the public API for app authors; `orchestra.plugin` is the API for
authors of agents, policies and backends. Everything else is an implementation detail.

Names are imported on first use (PEP 562), so `import orchestra` and `orchestra --help` stay
fast; a type checker sees them all through the `TYPE_CHECKING` block.
"""

from __future__ import annotations

import os as _os
from importlib import import_module as _import_module

TYPE_CHECKING = False  # typing's own would import typing: `orchestra --help` needs none of it

# LiteLLM reads this when it is first imported (by us or by the caller's code): its bundled cost
# map, never a download, so importing and starting Orchestra works offline.
_os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "ALL_TIERS": "orchestra.core.tier",
    "Tier": "orchestra.core.tier",
    "Agent": "orchestra.agents.base",
    "AgentContext": "orchestra.agents.context",
    "FunctionAgent": "orchestra.agents.function",
    "agent": "orchestra.agents.function",
    "Attempt": "orchestra.core.result",
    "Result": "orchestra.core.result",
    "Usage": "orchestra.core.result",
    "Budget": "orchestra.spend.budget",
    "Catalog": "orchestra.core.catalog",
    "Config": "orchestra.config",
    "load_config": "orchestra.config",
    "Candidate": "orchestra.core.decision",
    "Decision": "orchestra.core.decision",
    "Exclusion": "orchestra.core.decision",
    "Feedback": "orchestra.core.feedback",
    "Message": "orchestra.core.request",
    "Request": "orchestra.core.request",
    "ModelSpec": "orchestra.core.model_spec",
    "Verdict": "orchestra.core.verdict",
    "Policy": "orchestra.policies.base",
    "FunctionPolicy": "orchestra.policies.base",
    "register_policy": "orchestra.policies.registry",
    "Orchestra": "orchestra.runtime",
    "ResponseStream": "orchestra.response_stream",
    "SyncOrchestra": "orchestra.sync",
    "complete_sync": "orchestra.sync",
    **dict.fromkeys(
        (
            "AllCandidatesFailed",
            "ConfigError",
            "EmbeddedModelError",
            "NoAllowedModelError",
            "NotRecorded",
            "OrchestraError",
            "PolicyError",
            "ProviderError",
            "RateLimitedError",
            "RejectedRequest",
            "RequestError",
            "StoreError",
            "StoreUnavailable",
            "StreamBroken",
            "UnknownModelError",
        ),
        "orchestra.core.errors",
    ),
}

__all__ = [
    "ALL_TIERS",
    "Agent",
    "AgentContext",
    "AllCandidatesFailed",
    "Attempt",
    "Budget",
    "Candidate",
    "Catalog",
    "Config",
    "ConfigError",
    "Decision",
    "EmbeddedModelError",
    "Exclusion",
    "Feedback",
    "FunctionAgent",
    "FunctionPolicy",
    "Message",
    "ModelSpec",
    "NoAllowedModelError",
    "NotRecorded",
    "Orchestra",
    "OrchestraError",
    "Policy",
    "PolicyError",
    "ProviderError",
    "RateLimitedError",
    "RejectedRequest",
    "Request",
    "RequestError",
    "ResponseStream",
    "Result",
    "StoreError",
    "StoreUnavailable",
    "StreamBroken",
    "SyncOrchestra",
    "Tier",
    "UnknownModelError",
    "Usage",
    "Verdict",
    "__version__",
    "agent",
    "complete_sync",
    "load_config",
    "register_policy",
]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'orchestra' has no attribute {name!r}")
    value = getattr(_import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from orchestra.agents.base import Agent
    from orchestra.agents.context import AgentContext
    from orchestra.agents.function import FunctionAgent, agent
    from orchestra.config import Config, load_config
    from orchestra.core.catalog import Catalog
    from orchestra.core.decision import Candidate, Decision, Exclusion
    from orchestra.core.errors import (
        AllCandidatesFailed,
        ConfigError,
        EmbeddedModelError,
        NoAllowedModelError,
        NotRecorded,
        OrchestraError,
        PolicyError,
        ProviderError,
        RateLimitedError,
        RejectedRequest,
        RequestError,
        StoreError,
        StoreUnavailable,
        StreamBroken,
        UnknownModelError,
    )
    from orchestra.core.feedback import Feedback
    from orchestra.core.model_spec import ModelSpec
    from orchestra.core.request import Message, Request
    from orchestra.core.result import Attempt, Result, Usage
    from orchestra.core.tier import ALL_TIERS, Tier
    from orchestra.core.verdict import Verdict
    from orchestra.policies.base import FunctionPolicy, Policy
    from orchestra.policies.registry import register_policy
    from orchestra.response_stream import ResponseStream
    from orchestra.runtime import Orchestra
    from orchestra.spend.budget import Budget
    from orchestra.sync import SyncOrchestra, complete_sync
