"""An answer arriving in pieces, recorded like any other once it ends (or breaks)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from orchestra.core.errors import AllCandidatesFailed, OrchestraError, StreamBroken
from orchestra.core.request import Request
from orchestra.core.result import Result
from orchestra.execution.flight import Flight

if TYPE_CHECKING:
    from orchestra.runtime import Orchestra


class ResponseStream:
    """An answer arriving in pieces: iterate it for text; `result` is set once it completes.

    Failover to the next candidate is invisible until the first piece arrives; a failure after
    that raises `StreamBroken`, and the partial answer is recorded.
    """

    def __init__(self, orc: Orchestra, request: Request) -> None:
        self._orc = orc
        self.request = request
        self.result: Result | None = None

    def __aiter__(self) -> AsyncIterator[str]:
        return self._pieces()

    async def _pieces(self) -> AsyncIterator[str]:
        orc = self._orc
        executor = await orc._executor_ready()
        flight = Flight(self.request, stream=True)
        await orc._route(flight)
        finished = False
        try:
            async for item in executor.stream(flight):
                if isinstance(item, Result):
                    self.result = orc._finish(flight, item)
                    finished = True
                else:
                    yield item.text
        except (AllCandidatesFailed, StreamBroken) as exc:
            finished = True
            orc._fail(flight, exc, exc.attempts)
            raise
        finally:
            if not finished:
                closed = OrchestraError("the caller stopped reading the stream before its end")
                orc._fail(flight, closed, kind="cancelled")
