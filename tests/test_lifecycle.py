"""Objects that hold a database or threads are awaitable, closable, and loud when forgotten."""

from __future__ import annotations

import gc
import warnings
from pathlib import Path

from orchestra import Orchestra
from orchestra.config import parse_config
from orchestra.store import SqliteStore
from orchestra.testing import FunctionBackend

CONFIG = parse_config({"embedded": {"enabled": False}, "health": {"enabled": False}})


def dropped(holder: list[object]) -> list[str]:
    """Drop the one object `holder` holds; the ResourceWarnings that name it."""
    name = repr(holder[0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        holder.clear()
        gc.collect()
    return [
        str(w.message)
        for w in caught
        if issubclass(w.category, ResourceWarning) and name in str(w.message)
    ]


async def test_a_store_dropped_open_warns(db_path: Path) -> None:
    store = await SqliteStore(db_path).open()
    await store.close()
    assert dropped([store]) == [], "a closed store is quiet"
    del store

    opened = await SqliteStore(db_path).open()
    assert opened._open, "open() marks the store open; close() clears it"
    await opened.close()
    assert not opened._open

    # A store still open when dropped (its writer would keep it alive, so the flag plays it).
    leaked = SqliteStore(db_path.with_name("leaked.db"))
    leaked._open = True
    holder: list[object] = [leaked]
    del leaked
    assert any("never closed" in m for m in dropped(holder))


async def test_an_orchestra_dropped_open_warns() -> None:
    async with Orchestra(CONFIG, agents=[], backend=FunctionBackend(lambda c: "x")) as closed:
        pass
    assert dropped([closed]) == [], "a closed runtime is quiet"
    del closed

    orc = Orchestra(CONFIG, agents=[], backend=FunctionBackend(lambda c: "x"))
    await orc.start()
    store = orc._store
    assert store is not None
    await store.close()  # the test's own resources stay tidy; the runtime is left open
    del store
    holder: list[object] = [orc]
    del orc
    assert any("never closed" in m for m in dropped(holder))
