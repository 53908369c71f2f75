"""Listeners hear about breaker transitions (and outcomes); every method is a no-op by default."""

from __future__ import annotations

import logging

from orchestra.execution.breaker.states import OPEN

log = logging.getLogger("orchestra.breaker")


class BreakerListener:
    """Override only what you need. Called under the breaker's lock: keep it quick.

    A listener that raises is logged by the breaker and never fails the call.
    """

    def state_changed(self, model: str, old: str, new: str, reason: str) -> None:
        """`model`'s breaker moved from `old` to `new`."""

    def failure(self, model: str, reason: str) -> None:
        """A call to `model` failed (whatever the state)."""

    def success(self, model: str) -> None:
        """A call to `model` succeeded (whatever the state)."""


class LoggingBreakerListener(BreakerListener):
    """Logs transitions: WARNING when a model goes dark, INFO for the way back."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self._log = logger

    def state_changed(self, model: str, old: str, new: str, reason: str) -> None:
        level = logging.WARNING if new == OPEN else logging.INFO
        self._log.log(level, "breaker %s: %s -> %s (%s)", model, old, new, reason)
