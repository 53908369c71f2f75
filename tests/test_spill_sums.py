"""The spill file's running sums (bytes waiting, what its entries charged) stay equal to the
sums of its entries, whatever the outage does: writes, drains, totals kept, entries refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestra.store.spill import Spill, dumps, known_of, sums

Step = tuple[str, int]
steps = st.lists(
    st.tuples(st.sampled_from(["append", "drain", "keep", "refuse"]), st.integers(0, 40)),
    max_size=30,
)


def _summed(db: sqlite3.Connection) -> tuple[int, float]:
    waiting, usd = db.execute(
        "SELECT COALESCE(SUM(CASE WHEN drained_at IS NULL THEN size ELSE 0 END), 0),"
        " COALESCE(SUM(usd), 0) FROM pending"
    ).fetchone()
    return int(waiting), float(usd)


def _not_known(db: sqlite3.Connection) -> float:
    """What the entries not counted in the kept totals charged (drained after they were read)."""
    known = known_of(db)
    at = float("-inf") if known is None else float(known["at"])
    (usd,) = db.execute(
        "SELECT COALESCE(SUM(usd), 0) FROM pending WHERE drained_at IS NULL OR drained_at >= ?",
        (at,),
    ).fetchone()
    return float(usd)


def _entry(i: int) -> tuple[str, dict[str, object]]:
    charge = {"model": "c1", "tier": "cloud", "cost_usd": i / 1000, "hold_id": None}
    return "write", {"request": f"r{i}", "charges": [[f"r{i}", charge, float(i)]]}


@settings(max_examples=40, deadline=None)
@given(steps)
def test_the_running_sums_are_the_sums_of_the_entries(
    tmp_path_factory: object, run: list[Step]
) -> None:
    path = Path(tmp_path_factory.mktemp("spill")) / "spill.db"  # type: ignore[attr-defined]
    spill = Spill(path, 1 << 30)
    clock = 0.0
    try:
        for op, n in run:
            clock += 1.0
            if op == "append":
                spill.append([_entry(n + k) for k in range(1 + n % 3)], [True] * (1 + n % 3))
            elif op == "drain":
                ids = [i for i, _, _ in spill.take(n % 5 + 1)]
                spill.drained(ids, clock)
            elif op == "keep":
                totals = dict.fromkeys(("today_usd", "month_usd", "reserved_usd"), 0.0)
                spill.keep_known({**totals, "last_hour_usd": 0.0, "at": clock - n % 3})
            else:
                ids = [i for i, _, _ in spill.take(1)]
                spill.quarantine(ids)
            kept = spill.transaction(lambda db: (sums(db), _summed(db), _not_known(db)))
            (waiting, usd), (summed_waiting, summed_usd), not_known = kept
            assert waiting == summed_waiting
            assert abs(usd - summed_usd) < 1e-9
            # What the host spent beyond its known totals is every entry the file keeps:
            # keeping totals read at `at` deletes what was drained before `at`.
            assert abs(usd - not_known) < 1e-9
    finally:
        spill.close()


def test_a_file_of_an_older_orchestra_gets_its_entries_priced_and_summed(tmp_path: Path) -> None:
    """Entries spilled by an older Orchestra (no `usd` column, no sums) count in the host's
    allowance, and the sums start from them."""
    path = tmp_path / "spill.db"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE pending (id INTEGER PRIMARY KEY, kind TEXT NOT NULL,"
                " size INTEGER NOT NULL, payload TEXT NOT NULL,"
                " failed INTEGER NOT NULL DEFAULT 0)")  # fmt: skip
    texts = [dumps(_entry(i)[1]) for i in (250, 500)]
    old.executemany("INSERT INTO pending (kind, size, payload) VALUES ('write', ?, ?)",
                    [(len(t), t) for t in texts])  # fmt: skip
    old.commit()
    old.close()
    spill = Spill(path, 1 << 20)
    try:
        assert spill.counts() == (2, sum(len(t) for t in texts), 0)
        _, entries, held = spill.unsettled()
        assert len(entries) == 2 and held == 0.0
        waiting, usd = spill.transaction(sums)
        assert waiting == sum(len(t) for t in texts) and abs(usd - 0.75) < 1e-9
        assert spill.transaction(_summed) == (waiting, usd)
    finally:
        spill.close()
