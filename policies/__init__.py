"""Built-in policies, one per file."""

from policies.cost_saver import CostSaverPolicy
from policies.default import DefaultPolicy
from policies.latency_first import LatencyFirstPolicy
from policies.local_first import LocalFirstPolicy
from policies.matrix import MatrixPolicy
from policies.quality_first import QualityFirstPolicy

BUILTIN_POLICIES = {
    "default": DefaultPolicy,
    "local_first": LocalFirstPolicy,
    "cost_saver": CostSaverPolicy,
    "quality_first": QualityFirstPolicy,
    "latency_first": LatencyFirstPolicy,
    "matrix": MatrixPolicy,
}

__all__ = [
    "BUILTIN_POLICIES",
    "CostSaverPolicy",
    "DefaultPolicy",
    "LatencyFirstPolicy",
    "LocalFirstPolicy",
    "MatrixPolicy",
    "QualityFirstPolicy",
]
