"""Policies: the `Policy` protocol, the registry, and the built-in policies, one module each."""
