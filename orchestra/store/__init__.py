"""Persistence: requests, verdicts, attempts, the spend ledger and ambient samples in SQLite."""

from orchestra.store.record import RequestRecord
from orchestra.store.store import Store

__all__ = ["RequestRecord", "Store"]
