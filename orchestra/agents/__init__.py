"""Agents: the `Agent` base, function agents, the panel that runs them, and the built-ins
(resource, connectivity, cost, complexity, privacy), one module each."""
