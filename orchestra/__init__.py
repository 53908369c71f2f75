"""Orchestra: routes every LLM call to the right model and tier, and makes the call.

This module's `__all__` is the public API; everything else is an implementation detail.
"""

import os as _os

# LiteLLM reads this when it is first imported (by us or by the caller's code): its bundled cost
# map, never a download, so importing and starting Orchestra works offline.
_os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

from orchestra.agent import Agent
from orchestra.agent_context import AgentContext
from orchestra.backend import Backend, CallParams, Completion, Endpoint, StreamPiece
from orchestra.budget import Budget
from orchestra.catalog import Catalog
from orchestra.config import Config, load_config
from orchestra.decision import Candidate, Decision, Exclusion
from orchestra.defaults import register_policy
from orchestra.errors import (
    AllCandidatesFailed,
    ConfigError,
    EmbeddedModelError,
    NoAllowedModelError,
    OrchestraError,
    PolicyError,
    ProviderError,
    RequestError,
    StoreError,
    UnknownModelError,
)
from orchestra.executor import StreamBroken
from orchestra.feedback import Feedback
from orchestra.function_agent import FunctionAgent, agent
from orchestra.model_spec import ModelSpec
from orchestra.policy import FunctionPolicy, Policy
from orchestra.request import Message, Request
from orchestra.result import Attempt, Result, Usage
from orchestra.runtime import Orchestra, ResponseStream
from orchestra.sync import SyncOrchestra, complete_sync
from orchestra.tier import ALL_TIERS, Tier
from orchestra.verdict import Verdict

__version__ = "0.1.0"

__all__ = [
    "ALL_TIERS",
    "Agent",
    "AgentContext",
    "AllCandidatesFailed",
    "Attempt",
    "Backend",
    "Budget",
    "CallParams",
    "Candidate",
    "Catalog",
    "Completion",
    "Config",
    "ConfigError",
    "Decision",
    "EmbeddedModelError",
    "Endpoint",
    "Exclusion",
    "Feedback",
    "FunctionAgent",
    "FunctionPolicy",
    "Message",
    "ModelSpec",
    "NoAllowedModelError",
    "Orchestra",
    "OrchestraError",
    "Policy",
    "PolicyError",
    "ProviderError",
    "Request",
    "RequestError",
    "ResponseStream",
    "Result",
    "StoreError",
    "StreamBroken",
    "StreamPiece",
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
