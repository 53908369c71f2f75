"""A long replay split between processes gives the reports one process gives, progress and all;
a worker that fails has its part replayed in the calling process."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from replay_history import POLICIES, REPLAY_CATALOG, fill

import orchestra.lab.replay_parallel as parallel
from orchestra import FunctionPolicy
from orchestra.lab.replay import PolicyReport, _parts, replay
from orchestra.policies.base import Policy
from orchestra.policies.registry import resolve_policy
from orchestra.store import SqliteStore


def _policies() -> list[Policy]:
    return [resolve_policy(p) for p in POLICIES]


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    db = tmp_path_factory.mktemp("replay") / "orchestra.db"

    async def write() -> None:
        async with SqliteStore(db) as store:
            await fill(store)

    asyncio.run(write())
    yield db


def _run(
    db: Path, workers: int, progress: list[tuple[int, int]] | None = None
) -> list[PolicyReport]:
    async def go() -> list[PolicyReport]:
        async with SqliteStore(db) as store:
            on = None if progress is None else lambda d, t: progress.append((d, t))
            return await replay(store, REPLAY_CATALOG, _policies(), progress=on, workers=workers)

    return asyncio.run(go())


def _same(split: list[PolicyReport], whole: list[PolicyReport]) -> None:
    """The same reports; costs summed in another order may differ in their last bits."""
    assert len(split) == len(whole)
    for a, b in zip(split, whole, strict=True):
        da, db = a.to_dict(), b.to_dict()
        for key in ("estimated_cost_usd", "actual_cost_usd", "unmetered_cost_usd"):
            assert da.pop(key) == pytest.approx(db.pop(key), rel=1e-12)
        assert da == db


@pytest.mark.parametrize("workers", [2, 3])
def test_a_split_replay_reports_what_one_process_reports(
    history: Path, workers: int, caplog: pytest.LogCaptureFixture
) -> None:
    whole = _run(history, 1)
    progress: list[tuple[int, int]] = []
    with caplog.at_level(logging.WARNING, logger="orchestra.lab.replay_parallel"):
        split = _run(history, workers, progress)
    assert "failed" not in caplog.text, "each worker replayed its part"
    _same(split, whole)
    assert whole[0].requests == 400 and whole[0].decided > 0
    assert progress[0] == (0, 400) and progress[-1] == (400, 400)
    assert [d for d, _ in progress] == sorted(d for d, _ in progress)


@pytest.mark.parametrize(
    ("script", "said"),
    [
        ("import sys; sys.stdout.write('+3\\n'); sys.exit('no luck')", "no luck"),
        ("import sys; sys.stdout.write('+3\\n+three\\n')", "unreadable output"),
        ("import sys; sys.stdout.write('=5\\nabc')", "unreadable output"),
    ],
)
def test_a_failed_worker_has_its_part_replayed_here(
    history: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    script: str,
    said: str,
) -> None:
    monkeypatch.setattr(parallel, "_command", lambda: [sys.executable, "-c", script])
    progress: list[tuple[int, int]] = []
    with caplog.at_level(logging.WARNING, logger="orchestra.lab.replay_parallel"):
        split = _run(history, 2, progress)
    _same(split, _run(history, 1))
    assert "replay worker 1 of 2 failed" in caplog.text and said in caplog.text
    assert progress[-1] == (400, 400)


def test_a_job_that_cannot_be_pickled_is_replayed_here(
    history: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    unpicklable = lambda: None  # noqa: E731
    monkeypatch.setattr(SqliteStore, "opener", lambda self: unpicklable)
    with caplog.at_level(logging.WARNING, logger="orchestra.lab.replay_parallel"):
        split = _run(history, 2)
    _same(split, _run(history, 1))
    assert "cannot be sent to another process" in caplog.text


def test_only_a_whole_history_under_built_in_policies_is_split(history: Path) -> None:
    async def parts() -> list[int]:
        async with SqliteStore(history) as store:
            own = [FunctionPolicy(p.decide, name=p.name) for p in _policies()]
            return [
                _parts(store, _policies(), 400, True, 2),
                _parts(store, _policies(), 400, False, 2),  # a limit below the history
                _parts(store, own, 400, True, 2),  # a policy of the caller's own
                _parts(store, _policies(), 400, True, None),  # too short to pay
                _parts(store, _policies(), 10**6, True, 1),
            ]

    assert asyncio.run(parts()) == [2, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="workers"):
        asyncio.run(_bad_workers(history))


async def _bad_workers(db: Path) -> None:
    async with SqliteStore(db) as store:
        await replay(store, REPLAY_CATALOG, _policies(), workers=0)
