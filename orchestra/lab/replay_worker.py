"""A parallel replay's worker process: `python -m orchestra.lab.replay_worker`.

Reads its job (`replay_parallel.Job`, pickled) on standard input, replays its part of the
history and writes `+n` after each batch of n requests, then `=size` and its reports, pickled,
on standard output. Errors go to standard error, with a non-zero exit status.
"""

from __future__ import annotations

import asyncio
import pickle
import sys
from typing import BinaryIO

from orchestra.lab.replay_parallel import Job
from orchestra.lab.replay_rows import replay_part


async def work(job: Job, out: BinaryIO) -> None:
    """Replay `job`'s part, writing progress and reports to `out`."""

    def counted(n: int) -> None:
        out.write(b"+%d\n" % n)
        out.flush()

    async with job.opener() as store:
        reports = await replay_part(
            store, job.catalog, job.policies, job.since, None, job.part, counted
        )
    data = pickle.dumps(reports)
    out.write(b"=%d\n" % len(data) + data)
    out.flush()


def main() -> None:
    job = pickle.loads(sys.stdin.buffer.read())
    if not isinstance(job, Job):
        sys.exit("orchestra.lab.replay_worker: expected a replay job on standard input")
    asyncio.run(work(job, sys.stdout.buffer))


if __name__ == "__main__":
    main()
