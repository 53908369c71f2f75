"""The database schema: one ordered list of migrations, each in both dialects.

`STEPS[i]` moves the schema from version i to i + 1. Each step has a SQLite form (SQL, or a
function for what SQL cannot do alone) and a PostgreSQL form. PostgreSQL came at version 9: its
form of step 9 is the whole schema of that version (`postgres_schema.BASELINE`), and steps 1-8
have none there. From 10 on, a migration is one entry written for both, e.g.

    Step(
        sqlite="CREATE TABLE tags (name TEXT PRIMARY KEY, seen_at REAL NOT NULL)",
        postgres="CREATE TABLE tags (name TEXT PRIMARY KEY, seen_at DOUBLE PRECISION NOT NULL)",
    ),

SQLite keeps its version in `PRAGMA user_version`, PostgreSQL in the `orchestra_schema` table.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from orchestra.core.errors import StoreUnavailable
from orchestra.store.postgres_schema import BASELINE

# Each entry moves the schema from version i to i + 1 (SQL, or a function for what SQL cannot
# do alone). Never edit a released entry: append.
_SQL_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE requests (
        id                TEXT PRIMARY KEY,
        created_at        REAL NOT NULL,
        status            TEXT NOT NULL,
        model             TEXT,
        tier              TEXT,
        cost_usd          REAL NOT NULL DEFAULT 0,
        latency_ms        REAL,
        prompt_tokens     INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        prompt_sha256     TEXT NOT NULL,
        features          TEXT NOT NULL,
        prompt            TEXT,
        response          TEXT,
        forced_model      TEXT,
        forced_tier       TEXT,
        stream            INTEGER NOT NULL DEFAULT 0,
        policy            TEXT,
        decision          TEXT,
        error_kind        TEXT,
        error             TEXT
    );
    CREATE INDEX requests_created_at ON requests(created_at);
    CREATE TABLE verdicts (
        request_id  TEXT NOT NULL REFERENCES requests(id) ON DELETE CASCADE,
        position    INTEGER NOT NULL,
        agent       TEXT NOT NULL,
        target      TEXT,
        allowed     TEXT NOT NULL,
        confidence  REAL NOT NULL,
        state       TEXT NOT NULL,
        reason      TEXT NOT NULL,
        metrics     TEXT NOT NULL,
        at          REAL NOT NULL,
        stale       INTEGER NOT NULL,
        neutral     INTEGER NOT NULL,
        PRIMARY KEY (request_id, position)
    );
    CREATE TABLE attempts (
        request_id  TEXT NOT NULL REFERENCES requests(id) ON DELETE CASCADE,
        position    INTEGER NOT NULL,
        model       TEXT NOT NULL,
        tier        TEXT NOT NULL,
        ok          INTEGER NOT NULL,
        latency_ms  REAL NOT NULL,
        error_kind  TEXT,
        error       TEXT,
        status_code INTEGER,
        PRIMARY KEY (request_id, position)
    );
    CREATE TABLE ledger (
        id                INTEGER PRIMARY KEY,
        at                REAL NOT NULL,
        request_id        TEXT,
        model             TEXT NOT NULL,
        tier              TEXT NOT NULL,
        prompt_tokens     INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        cost_usd          REAL NOT NULL
    );
    CREATE INDEX ledger_at ON ledger(at);
    CREATE TABLE samples (
        id      INTEGER PRIMARY KEY,
        agent   TEXT NOT NULL,
        at      REAL NOT NULL,
        state   TEXT NOT NULL,
        verdict TEXT NOT NULL
    );
    CREATE INDEX samples_agent_at ON samples(agent, at);
    """,
    # 2: verdicts may deny single models (the cost agent: a model whose estimate overruns).
    """
    ALTER TABLE verdicts ADD COLUMN denied_models TEXT NOT NULL DEFAULT '[]';
    """,
    # 3: circuit breakers remember a dead provider across restarts; their transitions are events.
    """
    CREATE TABLE breaker_state (
        model      TEXT PRIMARY KEY,
        state      TEXT NOT NULL,
        failures   INTEGER NOT NULL,
        opened_at  REAL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE breaker_events (
        id         INTEGER PRIMARY KEY,
        model      TEXT NOT NULL,
        at         REAL NOT NULL,
        from_state TEXT NOT NULL,
        to_state   TEXT NOT NULL,
        reason     TEXT NOT NULL
    );
    CREATE INDEX breaker_events_model_at ON breaker_events(model, at);
    """,
    # 4: the optional exact-match response cache.
    """
    CREATE TABLE response_cache (
        key               TEXT PRIMARY KEY,
        model             TEXT NOT NULL,
        tier              TEXT NOT NULL,
        text              TEXT NOT NULL,
        prompt_tokens     INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        created_at        REAL NOT NULL,
        expires_at        REAL NOT NULL
    );
    CREATE INDEX response_cache_expires ON response_cache(expires_at);
    """,
    # 5: attempts say why a model was skipped, retried or answered from the cache.
    """
    ALTER TABLE attempts ADD COLUMN retry_after_s REAL;
    ALTER TABLE attempts ADD COLUMN retry_in_s REAL;
    ALTER TABLE attempts ADD COLUMN skipped INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE attempts ADD COLUMN cached INTEGER NOT NULL DEFAULT 0;
    """,
    # 6: what the user said of an answer (append only: the newest row per request counts).
    """
    CREATE TABLE feedback (
        id         INTEGER PRIMARY KEY,
        request_id TEXT NOT NULL REFERENCES requests(id) ON DELETE CASCADE,
        at         REAL NOT NULL,
        good       INTEGER NOT NULL,
        note       TEXT
    );
    CREATE INDEX feedback_request ON feedback(request_id, id);
    """,
    # 7: the ledger is the truth for every process: live reservations with leases, what kind of
    # charge each row is, and running sums per day and hour (budget calendar) so that no total
    # ever scans the ledger.
    """
    ALTER TABLE ledger ADD COLUMN kind TEXT NOT NULL DEFAULT 'answer';
    ALTER TABLE ledger ADD COLUMN reservation_id INTEGER;
    ALTER TABLE ledger ADD COLUMN estimated INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX ledger_reservation ON ledger(reservation_id) WHERE reservation_id IS NOT NULL;
    CREATE TABLE reservations (
        id         INTEGER PRIMARY KEY,
        request_id TEXT,
        model      TEXT NOT NULL,
        tier       TEXT NOT NULL,
        usd        REAL NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        owner      TEXT NOT NULL
    );
    CREATE INDEX reservations_expires ON reservations(expires_at);
    CREATE TABLE spend_day (
        day               TEXT NOT NULL,
        model             TEXT NOT NULL,
        tier              TEXT NOT NULL,
        answers           INTEGER NOT NULL,
        prompt_tokens     INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        cost_usd          REAL NOT NULL,
        PRIMARY KEY (day, model, tier)
    );
    CREATE TABLE spend_hour (
        day      TEXT NOT NULL,
        hour     INTEGER NOT NULL,
        cost_usd REAL NOT NULL,
        PRIMARY KEY (day, hour)
    );
    INSERT INTO spend_day
        SELECT date(at, 'unixepoch', 'localtime'), model, tier, COUNT(*), SUM(prompt_tokens),
               SUM(completion_tokens), SUM(cost_usd)
        FROM ledger GROUP BY 1, 2, 3;
    INSERT INTO spend_hour
        SELECT date(at, 'unixepoch', 'localtime'),
               CAST(strftime('%H', at, 'unixepoch', 'localtime') AS INTEGER), SUM(cost_usd)
        FROM ledger GROUP BY 1, 2;
    """,
    # 8: models added, changed or removed while running (`orchestra serve`'s admin routes), laid
    # over the configured catalog at each start: a spec as JSON, or NULL for a removed model.
    # `version` orders the changes of every process sharing the store.
    """
    CREATE TABLE models (
        name       TEXT PRIMARY KEY,
        spec       TEXT,
        version    INTEGER NOT NULL UNIQUE,
        updated_at REAL NOT NULL
    );
    """,
)


def _v9_compact_records(db: sqlite3.Connection) -> None:
    """9: a request is one row. Its decision, verdicts and attempts move into one compressed
    `detail` value (see `orchestra.store.detail`); values that repeat across requests are stored
    once, in `shared`, under a key. Totals come from the running sums: the ledger needs no time
    index."""
    from orchestra.core.decision import Decision
    from orchestra.core.result import Attempt
    from orchestra.core.verdict import Verdict
    from orchestra.store.detail import Interner, encode

    db.execute("ALTER TABLE requests ADD COLUMN detail BLOB")
    db.execute("CREATE TABLE shared (key TEXT PRIMARY KEY, json TEXT NOT NULL) WITHOUT ROWID")
    db.execute("DROP INDEX IF EXISTS ledger_at")
    verdicts: dict[str, list[Verdict]] = {}
    for row in db.execute(
        "SELECT request_id, agent, target, allowed, confidence, state, reason, metrics, at,"
        " stale, neutral, denied_models FROM verdicts ORDER BY request_id, position"
    ):
        rid, agent, target, allowed, conf, state, reason, metrics, at, stale, neutral, denied = row
        verdicts.setdefault(rid, []).append(
            Verdict.model_validate(
                {"agent": agent, "target": target, "allowed": json.loads(allowed),
                 "confidence": conf, "state": state, "reason": reason,
                 "metrics": _json_or_empty(metrics), "at": at, "stale": bool(stale),
                 "neutral": bool(neutral), "denied_models": json.loads(denied)}
            )
        )  # fmt: skip
    attempts: dict[str, list[Attempt]] = {}
    for row in db.execute(
        "SELECT request_id, model, tier, ok, latency_ms, error_kind, error, status_code,"
        " retry_after_s, retry_in_s, skipped, cached FROM attempts ORDER BY request_id, position"
    ):
        rid, model, tier, ok, ms, kind, error, status, after, retry_in, skipped, cached = row
        attempts.setdefault(rid, []).append(
            Attempt(model=model, tier=tier, ok=bool(ok), latency_ms=ms, error_kind=kind,
                    error=error, status_code=status, retry_after_s=after, retry_in_s=retry_in,
                    skipped=bool(skipped), cached=bool(cached))
        )  # fmt: skip
    interner = Interner()
    for rid, decision in db.execute("SELECT id, decision FROM requests").fetchall():
        d = Decision.model_validate_json(decision) if decision else None
        blob, new = encode(d, verdicts.get(rid, []), attempts.get(rid, []), (), interner)
        db.executemany("INSERT OR IGNORE INTO shared (key, json) VALUES (?, ?)", new)
        db.execute("UPDATE requests SET detail = ?, decision = NULL WHERE id = ?", (blob, rid))
    db.execute("DROP TABLE verdicts")
    db.execute("DROP TABLE attempts")


def _v10_prompt_hash_bytes(db: sqlite3.Connection) -> None:
    """10: `prompt_sha256` holds the hash's first 16 bytes, not its 64 hex digits (the column
    keeps its declared type: a SQLite column holds any value; PostgreSQL's becomes BYTEA)."""
    db.create_function("orchestra_unhex16", 1, _unhex16, deterministic=True)
    db.execute(
        "UPDATE requests SET prompt_sha256 = orchestra_unhex16(prompt_sha256)"
        " WHERE typeof(prompt_sha256) = 'text'"
    )


def _unhex16(text: str) -> bytes | str:
    """The first 16 bytes of a hex digest (a value that is not one is kept)."""
    try:
        return bytes.fromhex(text[:32])
    except ValueError:
        return text


def _json_or_empty(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


Migration = str | Callable[[sqlite3.Connection], None]
# A PostgreSQL step that SQL alone cannot do gets the open connection (asyncpg's, inside the
# migration's transaction); typed loosely so that SQLite users never import the driver.
PostgresMigration = str | Callable[[Any], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Step:
    """One migration in both dialects ("" : nothing to do in that one)."""

    sqlite: Migration
    postgres: PostgresMigration = ""


STEPS: tuple[Step, ...] = (
    *(Step(sqlite=script) for script in _SQL_MIGRATIONS),
    Step(sqlite=_v9_compact_records, postgres=BASELINE),
    Step(
        sqlite=_v10_prompt_hash_bytes,
        postgres="ALTER TABLE requests ALTER COLUMN prompt_sha256 TYPE BYTEA"
        " USING decode(left(prompt_sha256, 32), 'hex')",
    ),
    # 11: the store's own settings, e.g. its budget calendar's zone (`budget_zone`).
    Step(
        sqlite="CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        postgres="CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ),
    # 12: spilled writes that have no record to be found by (a dead offline hold's lost charge)
    # carry a key, kept here once written, so that a drain run again writes them once.
    Step(
        sqlite="",
        postgres="CREATE TABLE spill_applied (key TEXT PRIMARY KEY, at DOUBLE PRECISION NOT NULL)",
    ),
    # 13: holds granted while the database was unreachable, carried into it when it is back
    # (`<host>:<hold id>` -> the reservation that holds them now), for their calls to settle.
    Step(
        sqlite="",
        postgres="CREATE TABLE offline_carried (key TEXT PRIMARY KEY,"
        " reservation_id BIGINT NOT NULL, at DOUBLE PRECISION NOT NULL)",
    ),
)
MIGRATIONS: tuple[Migration, ...] = tuple(step.sqlite for step in STEPS)
SCHEMA_VERSION = len(STEPS)


def statements(script: str) -> list[str]:
    """A migration's statements, one by one (`executescript` would commit mid-transaction)."""
    out: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            out.append(pending.strip())
            pending = ""
    if pending.strip():
        out.append(pending.strip())
    return out


def migrate(db: sqlite3.Connection) -> int:
    """Bring the database to SCHEMA_VERSION in one write transaction; returns the start version.

    The version is read inside the transaction (`BEGIN IMMEDIATE` takes the write lock first),
    so processes starting together on a fresh file migrate it once: the others wait for the
    lock, then find nothing left to do.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        start = int(db.execute("PRAGMA user_version").fetchone()[0])
        if start > SCHEMA_VERSION:
            raise StoreUnavailable(
                f"database schema version {start} is newer than this Orchestra "
                f"({SCHEMA_VERSION}); upgrade Orchestra"
            )
        for version in range(start, SCHEMA_VERSION):
            step = MIGRATIONS[version]
            if callable(step):
                step(db)
                continue
            for statement in statements(step):
                db.execute(statement)
        if start != SCHEMA_VERSION:
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return start
