"""Built-in agents, one per file."""

from agents.complexity import ComplexityAgent
from agents.connectivity import ConnectivityAgent
from agents.cost import CostAgent
from agents.privacy import PrivacyAgent
from agents.resource import ResourceAgent

BUILTIN_AGENTS = {
    "resource": ResourceAgent,
    "connectivity": ConnectivityAgent,
    "cost": CostAgent,
    "complexity": ComplexityAgent,
    "privacy": PrivacyAgent,
}

__all__ = [
    "BUILTIN_AGENTS",
    "ComplexityAgent",
    "ConnectivityAgent",
    "CostAgent",
    "PrivacyAgent",
    "ResourceAgent",
]
