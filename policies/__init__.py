"""Built-in policies, one per file."""

from policies.default import DefaultPolicy

BUILTIN_POLICIES = {"default": DefaultPolicy}

__all__ = ["BUILTIN_POLICIES", "DefaultPolicy"]
