"""Replay's output stays the same: a varied history replayed under every built-in policy gives the
reports (JSON and table) stored when replay was first measured, and the same as the slow path
(each policy's `decide` through `decide_checked`, row by row).

Regenerate the stored output only on purpose: `python tests/test_replay_same_output.py`.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from replay_history import MODELS, POLICIES, REPLAY_CATALOG, fill

import orchestra.lab.replay_rows as lab
from orchestra import Catalog, FunctionPolicy
from orchestra.lab.replay import PolicyReport, render, replay
from orchestra.policies.base import Policy
from orchestra.policies.registry import resolve_policy
from orchestra.store import SqliteStore

EXPECTED = Path(__file__).with_name("replay_expected.json")
CATALOGS = {"replay": REPLAY_CATALOG, "full": Catalog(MODELS)}


def _policies() -> list[Policy]:
    return [resolve_policy(p) for p in POLICIES]


def _slow(policies: Sequence[Policy]) -> list[Policy]:
    """The same policies seen only through `decide` (no fast path can apply)."""
    return [FunctionPolicy(p.decide, name=p.name) for p in policies]


def _output(reports: Sequence[PolicyReport]) -> dict[str, Any]:
    """What `orchestra replay` prints, as --json and as the table."""
    from rich.console import Console

    out = io.StringIO()
    render(reports, Console(file=out, width=240, color_system=None))
    as_json = {"requests": reports[0].requests, "policies": [r.to_dict() for r in reports]}
    return {"json": json.dumps(as_json), "table": out.getvalue()}


async def _outputs(db: Path, policies: Sequence[Policy]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with SqliteStore(db) as store:
        for name, catalog in CATALOGS.items():
            out[name] = _output(await replay(store, catalog, policies))
        out["newest"] = _output(await replay(store, REPLAY_CATALOG, policies, limit=150))
    return out


@pytest.fixture(scope="module")
def history() -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "orchestra.db"

        async def write() -> None:
            async with SqliteStore(db) as store:
                await fill(store)

        asyncio.run(write())
        yield db


def test_replay_output_is_the_stored_one(history: Path) -> None:
    expected = json.loads(EXPECTED.read_text())
    assert asyncio.run(_outputs(history, _policies())) == expected


def test_replay_output_is_the_slow_paths(history: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lab, "BATCH", 37)  # batches that cut the history anywhere
    fast = asyncio.run(_outputs(history, _policies()))
    assert fast == asyncio.run(_outputs(history, _slow(_policies())))
    assert fast == json.loads(EXPECTED.read_text())


def test_the_history_is_varied(history: Path) -> None:
    (rep, *_) = asyncio.run(_reports(history))
    assert rep.errors > 0 and rep.no_allowed_model > 0 and rep.refused_live > 0
    assert 0 < rep.answered < rep.requests and 0 < rep.live_decisions < rep.requests
    assert all(v > 0 for v in rep.tier_counts.values()) and len(rep.tier_counts) == 3


async def _reports(db: Path) -> list[PolicyReport]:
    async with SqliteStore(db) as store:
        return await replay(store, REPLAY_CATALOG, _policies())


if __name__ == "__main__":  # regenerate the stored output
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "orchestra.db"

        async def _write() -> dict[str, Any]:
            async with SqliteStore(db) as store:
                await fill(store)
            return await _outputs(db, _slow(_policies()))

        EXPECTED.write_text(json.dumps(asyncio.run(_write()), indent=1) + "\n")
        sys.stdout.write(f"wrote {EXPECTED}\n")
