"""A long replay split between processes: one part of the history each, reports added up.

Replay is CPU work in one thread (reading, decoding, deciding, counting), so one process uses
one core. `replay_parallel` keeps part 0 of n for itself and starts a worker process
(`orchestra.lab.replay_worker`) for each other part: the store's rows are split by their key
(`Store.replay_batches(part=...)`), each worker opens the store itself (`Store.opener`) and
sends back its reports, which this process adds to its own. A worker that fails is not fatal:
its part is replayed here instead, and a warning says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestra.core.catalog import Catalog
from orchestra.lab.replay_rows import replay_part
from orchestra.lab.report import PolicyReport
from orchestra.policies.base import Policy
from orchestra.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """What a worker needs to replay its part (sent pickled on its standard input)."""

    opener: Callable[[], Store]
    catalog: Catalog
    policies: tuple[Policy, ...]
    since: float | None
    part: tuple[int, int]


class WorkerFailed(Exception):
    """A replay worker ended without its reports."""


async def replay_parallel(
    store: Store,
    catalog: Catalog,
    policies: Sequence[Policy],
    since: float | None,
    total: int,
    parts: int,
    progress: Callable[[int, int], None] | None = None,
) -> list[PolicyReport]:
    """`replay` of every request since `since` (`total` of them), in `parts` processes."""
    opener = store.opener()
    assert opener is not None, "replay() splits only a store another process can open"
    done = [0] * parts

    def counted(k: int) -> Callable[[int], None]:
        def count(n: int) -> None:
            done[k] += n
            if progress is not None:
                progress(min(sum(done), total), total)

        return count

    workers = [
        asyncio.create_task(
            _worker(Job(opener, catalog, tuple(policies), since, (k, parts)), counted(k)),
            name=f"orchestra-replay-{k}",
        )
        for k in range(1, parts)
    ]
    try:
        reports = await replay_part(store, catalog, policies, since, None, (0, parts), counted(0))
        for k, worker in enumerate(workers, start=1):
            try:
                theirs = await worker
            except (WorkerFailed, OSError, NotImplementedError) as exc:  # the last: a loop
                # without subprocesses (Windows' selector loop)
                log.warning("replay worker %d of %d failed, replaying its part here: %s",
                            k, parts, exc)  # fmt: skip
                done[k] = 0
                theirs = await replay_part(
                    store, catalog, policies, since, None, (k, parts), counted(k)
                )
            for mine, other in zip(reports, theirs, strict=True):
                mine.add(other)
        return reports
    finally:
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)


def _command() -> list[str]:
    """The worker's command line."""
    return [sys.executable, "-m", "orchestra.lab.replay_worker"]


def _environment() -> dict[str, str]:
    """This environment, with this `orchestra` first on the worker's import path."""
    here = str(Path(__file__).resolve().parents[2])  # the folder holding `orchestra/`
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": here if not path else f"{here}{os.pathsep}{path}"}


async def _worker(job: Job, counted: Callable[[int], None]) -> list[PolicyReport]:
    """Run one worker on `job`: its progress to `counted`, its reports returned."""
    try:
        sent = pickle.dumps(job)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise WorkerFailed(f"the job cannot be sent to another process: {exc}") from exc
    proc = await asyncio.create_subprocess_exec(
        *_command(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_environment(),
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    errors = asyncio.create_task(proc.stderr.read())
    try:
        proc.stdin.write(sent)
        with contextlib.suppress(ConnectionError):  # it died: said below
            await proc.stdin.drain()
            proc.stdin.close()
        try:
            reports = await _read(proc.stdout, counted)
        except (ValueError, EOFError, pickle.UnpicklingError, asyncio.IncompleteReadError) as exc:
            raise WorkerFailed(f"unreadable output: {exc!r}") from exc
        if await proc.wait() != 0 or reports is None:
            said = (await errors).decode(errors="replace").strip().splitlines()
            raise WorkerFailed(
                f"exit status {proc.returncode}: {said[-1] if said else 'no message'}"
            )
        return reports
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        errors.cancel()


async def _read(
    out: asyncio.StreamReader, counted: Callable[[int], None]
) -> list[PolicyReport] | None:
    """A worker's output: `+n` lines (n more requests counted), then `=size` and its reports
    (pickled, `size` bytes: a process of our own, started with our own job). None if it ends
    before them."""
    while line := await out.readline():
        if line.startswith(b"+"):
            counted(int(line[1:]))
        elif line.startswith(b"="):
            reports = pickle.loads(await out.readexactly(int(line[1:])))
            if not all(isinstance(r, PolicyReport) for r in reports):
                raise WorkerFailed("it sent something other than reports")
            return list(reports)
    return None
