"""Persistence: requests, verdicts, attempts, the spend ledger and ambient samples in SQLite."""

from orchestra.store.record import RequestRecord
from orchestra.store.store import SqlWrite, Store

__all__ = ["RequestRecord", "SqlWrite", "Store"]
