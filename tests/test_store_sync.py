"""How far a commit goes before an answer is returned: synced to the disk by default (a power
cut keeps every returned answer and its spend), left to the operating system when `[store] sync
= "normal"` says so. A power cut cannot be staged in a test; what is checked is the level each
connection that writes records and spend runs at (SQLite: `PRAGMA synchronous`, 2 = FULL,
1 = NORMAL), reached through the config as a user sets it."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestra import ConfigError, Orchestra
from orchestra.config import parse_config
from orchestra.store import SqliteStore, open_store
from orchestra.store.spill import Spill

FULL, NORMAL = 2, 1


async def writer_level(store: SqliteStore) -> int:
    """The `synchronous` level of the connection the store commits records and spend on."""
    writer = store._writer

    def read() -> int:
        assert writer._conn is not None
        return int(writer._conn.execute("PRAGMA synchronous").fetchone()[0])

    level: int = await writer.run(read)
    return level


async def test_a_store_syncs_each_commit_by_default(tmp_path: Path) -> None:
    store = await SqliteStore(tmp_path / "o.db").open()
    try:
        assert await writer_level(store) == FULL
    finally:
        await store.close()


@pytest.mark.parametrize(("setting", "level"), [("full", FULL), ("normal", NORMAL)])
async def test_the_config_sets_how_commits_reach_the_disk(
    tmp_path: Path, setting: str, level: int
) -> None:
    config = parse_config({"embedded": {"enabled": False}, "store": {"sync": setting}})
    async with Orchestra(config, db_path=tmp_path / "o.db") as orc:
        store = orc._require_store()
        assert isinstance(store, SqliteStore)
        assert await writer_level(store) == level
        # A store opened again for another process (a replay worker) keeps the setting.
        other = store.opener()()
        assert isinstance(other, SqliteStore) and other._writer.sync == setting


def test_the_spill_file_follows_the_setting(tmp_path: Path) -> None:
    """PostgreSQL's spill file is the only copy of the records written while the database is
    away: it is synced like a SQLite store."""
    for setting, level in (("full", FULL), ("normal", NORMAL)):
        store = open_store(
            "postgresql://postgres@/none?host=/nowhere", home=tmp_path / setting, sync=setting
        )
        spill: Spill = store._spill  # type: ignore[attr-defined]
        try:
            assert spill._db().execute("PRAGMA synchronous").fetchone()[0] == level
        finally:
            spill.close()


def test_an_unknown_setting_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="sync"):
        parse_config({"store": {"sync": "sometimes"}})
