"""Pausing the cyclic garbage collector over a tight, synchronous loop.

A loop that builds many acyclic objects while a large batch stays alive (replay's rows) spends a
quarter of its time in collections that walk the batch again and again and free nothing:
reference counting frees those objects anyway. The pause covers code that does not await, so no
other task runs meanwhile, and ends with the block (the collector is left as it was found).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic collection within the block (synchronous code only)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
