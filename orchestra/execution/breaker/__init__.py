"""Circuit breakers: stop calling a model that keeps failing, try it again after a while."""

from orchestra.execution.breaker.breaker import BreakerBoard, BreakerSettings, CircuitBreaker
from orchestra.execution.breaker.listener import BreakerListener, LoggingBreakerListener
from orchestra.execution.breaker.states import CLOSED, HALF_OPEN, OPEN
from orchestra.execution.breaker.storage import BreakerRecord, BreakerStorage, MemoryBreakerStorage

__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "BreakerBoard",
    "BreakerListener",
    "BreakerRecord",
    "BreakerSettings",
    "BreakerStorage",
    "CircuitBreaker",
    "LoggingBreakerListener",
    "MemoryBreakerStorage",
]
