"""The settings a config table passes to what it builds (`[agents.NAME]`, `[policy]`): checked
against the builder's parameters first, so a misspelt key is named with the keys it could be,
rather than as Python's `__init__() got an unexpected keyword argument`."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any


def unknown_settings(factory: Callable[..., Any], given: Iterable[str]) -> str | None:
    """Why `factory` cannot take the keyword arguments `given`, naming the ones it does take;
    None when it takes them all (or its parameters cannot be known: it is called as it is)."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin or a C extension: no signature to read
        return None
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    takes = [p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    unknown = [key for key in given if key not in takes]
    if not unknown:
        return None
    plural = "s" if len(unknown) > 1 else ""
    return (
        f"unknown setting{plural} {', '.join(repr(k) for k in unknown)}; "
        f"it takes: {', '.join(takes) or 'none'}"
    )
