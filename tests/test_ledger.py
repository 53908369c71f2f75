"""The ledger holds for every process sharing a home: no overspend, nothing returned lost, one
migration however many start at once."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ledger_child import call_cost, outputs

from orchestra.store.schema import SCHEMA_VERSION

CHILD = Path(__file__).with_name("ledger_child.py")


def spawn(*args: object, **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
        **kw,  # type: ignore[arg-type]
    )


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_four_processes_never_pay_more_than_the_budget_covers(tmp_path: Path) -> None:
    covered = 25  # the budget pays for exactly 25 calls; 160 want one
    budget = (covered + 0.5) * call_cost()
    children = [spawn("budget", tmp_path, 40, budget) for _ in range(4)]
    summaries = outputs(children)
    paid = sum(s["paid"] for s in summaries)
    assert paid == covered, summaries
    assert sum(s["answered"] for s in summaries) == 160, "the rest answered locally"
    db = tmp_path / "orchestra.db"
    (total,) = rows(db, "SELECT SUM(cost_usd) FROM ledger")[0]
    assert total <= budget
    assert total == pytest.approx(sum(s["cost"] for s in summaries)), "ledger == answers"
    assert rows(db, "SELECT COUNT(*) FROM ledger") == [(covered,)], "a row per paid call"
    assert rows(db, "SELECT SUM(answers) FROM spend_day") == [(160,)], "every answer counted"
    assert rows(db, "SELECT COUNT(*) FROM reservations") == [(0,)], "every hold settled"


def test_forty_processes_starting_on_a_fresh_home_migrate_it_once(tmp_path: Path) -> None:
    start_at = time.time() + 3.0  # all of them open the store in the same instant
    children = [spawn("open", tmp_path, start_at) for _ in range(40)]
    failed = []
    for child in children:
        _, err = child.communicate(timeout=120)
        if child.returncode != 0:
            failed.append(err.strip().splitlines()[-1:])
    assert not failed, failed
    db = tmp_path / "orchestra.db"
    assert rows(db, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]


@pytest.mark.slow
def test_kill_9_loses_no_returned_request(tmp_path: Path) -> None:
    rng = random.Random(11)
    returned: list[str] = []
    for _ in range(20):
        child = spawn("loop", tmp_path)
        assert child.stdout is not None
        deadline = time.time() + 30
        want = rng.randint(1, 60)
        seen = 0
        while seen < want and time.time() < deadline:  # let it answer a few, then kill it
            line = child.stdout.readline()
            if not line:
                break
            returned.append(line.strip())
            seen += 1
        time.sleep(rng.random() * 0.05)
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate(timeout=30)
        returned += [line.strip() for line in out.splitlines() if line.strip()]
        assert child.returncode == -signal.SIGKILL
    assert len(returned) > 100
    db = tmp_path / "orchestra.db"
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
    stored = {rid for (rid,) in rows(db, "SELECT id FROM requests WHERE status = 'ok'")}
    ledger = {rid for (rid,) in rows(db, "SELECT request_id FROM ledger WHERE kind = 'answer'")}
    lost = [rid for rid in returned if rid not in stored or rid not in ledger]
    assert not lost, f"{len(lost)} of {len(returned)} returned requests are not on disk"
