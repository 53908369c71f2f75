"""How long the cyclic garbage collector has run in this thread.

A full collection stops whatever code is running for as long as the heap takes to walk: tens to
hundreds of milliseconds in a busy server. A check timed by the wall clock is charged for that
pause although it did not cause it (the collection was due; the check merely allocated the
object that tipped it). Subtracting `spent()` taken before and after leaves the check's own time.
"""

from __future__ import annotations

import gc
import threading
import time
from typing import Any

_here = threading.local()  # collections run in the thread whose allocation triggered them


def _on_collection(phase: str, info: dict[str, Any]) -> None:
    now = time.perf_counter()
    if phase == "start":
        _here.started = now
    elif (started := getattr(_here, "started", None)) is not None:
        _here.spent = getattr(_here, "spent", 0.0) + (now - started)
        _here.started = None


def watch() -> None:
    """Start counting (once per process; a callback per collection, well under a microsecond)."""
    if _on_collection not in gc.callbacks:
        gc.callbacks.append(_on_collection)


def spent() -> float:
    """Seconds the collector has run in this thread since `watch()`."""
    spent_s: float = getattr(_here, "spent", 0.0)
    return spent_s
