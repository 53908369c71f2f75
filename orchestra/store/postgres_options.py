"""How a PostgreSQL store connects and where it spills (no driver imported here)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from orchestra.store.sync import DEFAULT_SYNC, Sync


def masked(url: str) -> str:
    """A URL fit to print: its password (before the host's @, the last one before the query,
    or a `password=` parameter) as ***."""
    url = re.sub(r"(://[^:/@?#]*:)[^?#]*@", r"\1***@", url)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url, flags=re.IGNORECASE)


@dataclass(frozen=True, kw_only=True, slots=True)
class Timeouts:
    """How long to wait: for a connection, and for any one statement (enforced by the server
    too, as `statement_timeout`)."""

    connect_s: float = 5.0
    statement_s: float = 10.0


@dataclass(frozen=True, kw_only=True, slots=True)
class PostgresOptions:
    """The pool's size, the timeouts, and the spill file (its place, its cap in bytes, and how
    its commits are synced: see `orchestra.store.sync`)."""

    spill_path: Path
    spill_max_bytes: int = 256 * 1024 * 1024
    spill_sync: Sync = DEFAULT_SYNC
    pool_size: int = 5
    timeouts: Timeouts = field(default_factory=Timeouts)
