"""Circuit breakers: stop calling a model that keeps failing, try it again after a while."""

from orchestra.breaker.breaker import BreakerBoard, BreakerSettings, CircuitBreaker
from orchestra.breaker.listener import BreakerListener, LoggingBreakerListener
from orchestra.breaker.sqlite_storage import SqliteBreakerStorage
from orchestra.breaker.states import CLOSED, HALF_OPEN, OPEN
from orchestra.breaker.storage import BreakerRecord, BreakerStorage, MemoryBreakerStorage

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
    "SqliteBreakerStorage",
]
