"""Pausing the cyclic garbage collector over a batch job's tight loops.

A loop that builds many acyclic objects while a large batch stays alive (replay's rows) spends a
quarter of its time in collections that walk the batch again and again and free nothing:
reference counting frees those objects anyway. Pause it over synchronous code, or over a whole
batch job such as `orchestra replay` (then other tasks' cyclic garbage, if any, waits until the
job ends). The collector is left as it was found when the block ends.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic collection within the block."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
